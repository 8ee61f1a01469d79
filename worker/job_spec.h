// Job specifications: YAML or JSON text mapped onto mfpo.v1.JobSpec (proto/mfpo_job.proto),
// completed with the documented defaults and validated. Every error names the field path.
#ifndef MFPO_WORKER_JOB_SPEC_H_
#define MFPO_WORKER_JOB_SPEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "mfpo_job.pb.h"

namespace mfpo {

// The spec with every default filled in (see the comments in mfpo_job.proto).
v1::JobSpec DefaultJobSpec();

// Parses YAML (`yaml` true) or JSON into a JobSpec, rejecting unknown fields and values of the
// wrong type; then merges it over the defaults and validates. `source` names the file.
absl::StatusOr<v1::JobSpec> ParseJobSpec(const std::string& text, bool yaml, const std::string& source);
// By extension: .yaml / .yml are YAML, anything else JSON.
absl::StatusOr<v1::JobSpec> LoadJobSpec(const std::string& path);

// The given fields over the defaults (a list given replaces the default list), validated: what
// ParseJobSpec does after parsing, for a spec that arrives as a message (the coordinator).
absl::StatusOr<v1::JobSpec> CompleteJobSpec(const v1::JobSpec& given);

// Checks a complete spec: required fields, ranges, enumerations; "field.path: reason".
absl::Status ValidateJobSpec(const v1::JobSpec& spec);

// The spec as JSON (written next to checkpoints).
std::string JobSpecToJson(const v1::JobSpec& spec);

}  // namespace mfpo

#endif  // MFPO_WORKER_JOB_SPEC_H_
