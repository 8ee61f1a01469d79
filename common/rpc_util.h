// gRPC plumbing shared by the coordinator, the agents and mfpoctl: absl::Status <-> grpc::Status
// (the one place where codes are converted), transport security (TLS with an optional client
// certificate) and the bearer token, and per-call deadlines.
#ifndef MFPO_COMMON_RPC_UTIL_H_
#define MFPO_COMMON_RPC_UTIL_H_

#include <chrono>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mfpo {

// Same code and message (codes are numbered alike in both libraries).
grpc::Status ToGrpcStatus(const absl::Status& status);
// `what` names the call ("SubmitJob to 127.0.0.1:7070"); UNAVAILABLE and DEADLINE_EXCEEDED get a
// hint about the server.
absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view what);

// "HOST:PORT" with a port in [0, 65535] (0: any free one) and a non-empty host ("[::1]:7070"
// for IPv6); INVALID_ARGUMENT naming `flag` otherwise.
absl::Status CheckListenAddress(const std::string& address, const std::string& flag);

// Server side. Empty cert: plaintext (loopback and tests). With client_ca, clients must present
// a certificate signed by it (mutual TLS).
struct ServerSecurity {
  std::string tls_cert;   // PEM file of the server certificate (chain)
  std::string tls_key;    // PEM file of its private key
  std::string client_ca;  // PEM file: require and verify client certificates
  std::string token;      // bearer token every JobService / WorkerService call must carry; "" = none
};
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const ServerSecurity& security);
// UNAUTHENTICATED unless the call carries "authorization: Bearer <token>" (constant-time compare).
// The bearer token in `path` (trailing white space dropped); an empty file is an error.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);
absl::Status CheckBearerToken(const grpc::ServerContextBase& context, const std::string& token);

// Client side. ca: PEM file of the CA that signed the server (turns TLS on); cert/key: this
// client's certificate for mutual TLS.
struct ClientSecurity {
  std::string ca;
  std::string cert;
  std::string key;
  std::string server_name;  // TLS name to verify instead of the address's host
  std::string token;
};
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& address, const ClientSecurity& security);
// grpc.health.v1.Health/Check of `service` ("" = the whole server) over `channel`: the status
// (1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN) or the call's error. A generic call (the health
// service's stubs are not installed with Debian's gRPC): the request is HealthCheckRequest's
// encoding, the answer HealthCheckResponse's (field 1, a varint).
absl::StatusOr<int> CheckHealth(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                                std::chrono::milliseconds deadline);

// Sets the deadline and the token of one call.
void PrepareCall(grpc::ClientContext* context, const ClientSecurity& security, std::chrono::milliseconds deadline);

}  // namespace mfpo

#endif  // MFPO_COMMON_RPC_UTIL_H_
