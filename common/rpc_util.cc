#include "common/rpc_util.h"

#include <grpcpp/generic/generic_stub.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace mfpo {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view what) {
  if (status.ok()) return absl::OkStatus();
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  std::string message = absl::StrCat(what, ": ", status.error_message());
  if (code == absl::StatusCode::kUnavailable)
    absl::StrAppend(&message, " (is the server running at that address, and with the same TLS settings?)");
  if (code == absl::StatusCode::kDeadlineExceeded) absl::StrAppend(&message, " (the server did not answer in time)");
  return absl::Status(code, message);
}

absl::Status CheckListenAddress(const std::string& address, const std::string& flag) {
  const size_t colon = address.rfind(':');
  auto bad = [&](const char* why) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " '", address, "': ", why, " (HOST:PORT, e.g. 127.0.0.1:7070)"));
  };
  if (colon == std::string::npos || colon == 0) return bad("no HOST:PORT");
  const std::string host = address.substr(0, colon), port = address.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return bad("bad port");
  if (std::stoi(port) > 65535) return bad("the port is above 65535");
  if (host.front() == '[' && host.back() != ']') return bad("an IPv6 host goes in brackets");
  if (host.front() != '[' && host.find(':') != std::string::npos) return bad("an IPv6 host goes in brackets");
  return absl::OkStatus();
}

namespace {

// A PEM file holding a certificate (or a private key when `key`): gRPC would only say later that
// it "could not load any root certificate", without naming the file.
absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what, bool key = false) {
  MFPO_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, what));
  const bool ok = key ? absl::StrContains(text, "PRIVATE KEY-----") : absl::StrContains(text, "-----BEGIN CERTIFICATE-----");
  if (!ok)
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what, " is not a PEM ",
                                                   key ? "private key (no PRIVATE KEY block)" : "certificate (no -----BEGIN CERTIFICATE----- block)"));
  return text;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const ServerSecurity& s) {
  if (s.tls_cert.empty() != s.tls_key.empty())
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  if (s.tls_cert.empty()) {
    if (!s.client_ca.empty()) return absl::InvalidArgumentError("--tls_client_ca needs --tls_cert and --tls_key");
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions options(s.client_ca.empty()
                                                ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                                : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  MFPO_ASSIGN_OR_RETURN(pair.cert_chain, ReadPem(s.tls_cert, "the server certificate"));
  MFPO_ASSIGN_OR_RETURN(pair.private_key, ReadPem(s.tls_key, "the server key", true));
  options.pem_key_cert_pairs.push_back(pair);
  if (!s.client_ca.empty()) {
    MFPO_ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem(s.client_ca, "the client CA"));
  }
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  MFPO_ASSIGN_OR_RETURN(std::string token, ReadFileToString(path, "token file"));
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ' || token.back() == '\t'))
    token.pop_back();
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": the token file is empty"));
  return token;
}

absl::Status CheckBearerToken(const grpc::ServerContextBase& context, const std::string& token) {
  if (token.empty()) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end())
    return absl::UnauthenticatedError("this server needs a bearer token (--token_file F, or token_file in mfpoctl's config file)");
  const std::string given(it->second.data(), it->second.size());
  const std::string want = absl::StrCat("Bearer ", token);
  // Constant time over the expected length: the comparison does not tell how much matched.
  unsigned diff = given.size() == want.size() ? 0 : 1;
  for (size_t i = 0; i < want.size(); ++i) diff |= static_cast<unsigned>(want[i] ^ (i < given.size() ? given[i] : 0));
  if (diff != 0) return absl::UnauthenticatedError("wrong bearer token");
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& address, const ClientSecurity& s) {
  if (address.empty()) return absl::InvalidArgumentError("no server address given (--server HOST:PORT)");
  // gRPC target URIs (dns:///, unix:) pass as they are; a plain address must be HOST:PORT.
  if (address.find(':') == std::string::npos || (address.find("://") == std::string::npos && address.rfind("unix:", 0) != 0)) {
    MFPO_RETURN_IF_ERROR(CheckListenAddress(address, "the coordinator's address"));
    if (address.substr(address.rfind(':') + 1) == "0")
      return absl::InvalidArgumentError(absl::StrCat("the coordinator's address '", address, "': port 0"));
  }
  if (s.cert.empty() != s.key.empty()) return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  // Reconnect quickly after a coordinator restart (the default backoff grows to 2 minutes).
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (s.ca.empty() && s.cert.empty()) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions options;
    if (!s.ca.empty()) {
      MFPO_ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem(s.ca, "the CA certificate"));
    }
    if (!s.cert.empty()) {
      MFPO_ASSIGN_OR_RETURN(options.pem_cert_chain, ReadPem(s.cert, "the client certificate"));
      MFPO_ASSIGN_OR_RETURN(options.pem_private_key, ReadPem(s.key, "the client key", true));
    }
    credentials = grpc::SslCredentials(options);
    if (!s.server_name.empty()) args.SetSslTargetNameOverride(s.server_name);
  }
  return grpc::CreateCustomChannel(address, credentials, args);
}

absl::StatusOr<int> CheckHealth(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                                std::chrono::milliseconds deadline) {
  if (service.size() > 127) return absl::InvalidArgumentError("service name longer than 127 bytes");
  grpc::GenericStub stub(channel);
  std::string request;
  if (!service.empty()) request = std::string("\x0a") + static_cast<char>(service.size()) + service;
  grpc::Slice slice(request);
  grpc::ByteBuffer in(&slice, 1), out;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + deadline);
  grpc::CompletionQueue cq;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
      stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", in, &cq);
  call->StartCall();
  grpc::Status status;
  call->Finish(&out, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  if (!cq.Next(&tag, &ok) || !ok) return absl::UnavailableError("health check: no answer");
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  if (!status.ok()) return FromGrpcStatus(status, absl::StrCat("health check of '", service, "'"));
  std::vector<grpc::Slice> slices;
  (void)out.Dump(&slices);
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  if (bytes.empty()) return 0;  // UNKNOWN
  if (bytes.size() != 2 || bytes[0] != 0x08) return absl::DataLossError("health check: an answer that does not parse");
  return static_cast<int>(bytes[1]);
}

void PrepareCall(grpc::ClientContext* context, const ClientSecurity& s, std::chrono::milliseconds deadline) {
  context->set_deadline(std::chrono::system_clock::now() + deadline);
  if (!s.token.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", s.token));
}

}  // namespace mfpo
