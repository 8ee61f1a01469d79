// Status plumbing shared by every component. absl 20220623 does not export its own
// RETURN_IF_ERROR / ASSIGN_OR_RETURN macros, so the project defines the two it needs here.
#ifndef MFPO_COMMON_STATUS_MACROS_H_
#define MFPO_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MFPO_CONCAT_INNER_(a, b) a##b
#define MFPO_CONCAT_(a, b) MFPO_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define MFPO_RETURN_IF_ERROR(expr)                \
  do {                                            \
    ::absl::Status mfpo_status_ = (expr);         \
    if (!mfpo_status_.ok()) return mfpo_status_;  \
  } while (0)

// `lhs = value of expr` where expr is an absl::StatusOr<T>; returns its status on error.
#define MFPO_ASSIGN_OR_RETURN(lhs, expr) \
  MFPO_ASSIGN_OR_RETURN_IMPL_(MFPO_CONCAT_(mfpo_statusor_, __LINE__), lhs, expr)
#define MFPO_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

namespace mfpo {

// Prefixes `status`'s message with `context` ("file.safetensors: ..."), keeping the code.
absl::Status Annotate(const absl::Status& status, absl::string_view context);

}  // namespace mfpo

#endif  // MFPO_COMMON_STATUS_MACROS_H_
