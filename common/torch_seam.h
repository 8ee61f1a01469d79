// The one seam where LibTorch and OpenCV exceptions become absl::Status.
//
// Library code that calls into LibTorch/OpenCV in a way that can throw (shape errors, bad
// allocations, decoder failures) wraps the call in `CatchAll(context, fn)`. Nothing above this
// seam sees an exception.
#ifndef MFPO_COMMON_TORCH_SEAM_H_
#define MFPO_COMMON_TORCH_SEAM_H_

#include <string>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace mfpo {

namespace internal {
// Message of the exception in flight (c10::Error, cv::Exception, std::exception); the first
// line only for c10 errors, whose backtraces are noise for users.
std::string CurrentExceptionMessage();

template <typename T>
struct IsStatusOr : std::false_type {};
template <typename T>
struct IsStatusOr<absl::StatusOr<T>> : std::true_type {};
}  // namespace internal

// Runs `fn` and converts any exception into an INTERNAL status prefixed with `context`.
// `fn` may return void, absl::Status, absl::StatusOr<T> or a plain value T (-> StatusOr<T>).
template <typename Fn>
auto CatchAll(absl::string_view context, Fn&& fn) {
  using R = std::invoke_result_t<Fn>;
  auto error = [&] {
    return absl::InternalError(absl::StrCat(context, ": ", internal::CurrentExceptionMessage()));
  };
  if constexpr (std::is_void_v<R>) {
    try {
      fn();
      return absl::OkStatus();
    } catch (...) {
      return error();
    }
  } else {
    using Out = std::conditional_t<std::is_same_v<R, absl::Status> || internal::IsStatusOr<R>::value,
                                   R, absl::StatusOr<R>>;
    try {
      return Out(fn());
    } catch (...) {
      return Out(error());
    }
  }
}

}  // namespace mfpo

#endif  // MFPO_COMMON_TORCH_SEAM_H_
