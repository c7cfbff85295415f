#pragma once

// A connection to NATS with JetStream (library target fnbus::nats, built
// when the NATS C client is found; the core library never depends on it).
// The bridge's exporters and importers share one Connection; it owns the
// client's connection and JetStream context, reconnects by itself, and
// turns the client's errors into absl::Status messages that say what to do.
//
//   auto nats = fnbus::nats::Connection::Connect(
//       {.url = "nats://127.0.0.1:4222"});
//   if (!nats.ok()) return nats.status();  // e.g. "no NATS server ..."
//   RETURN_IF_ERROR((*nats)->ensure_stream(
//       {.name = "ORDERS", .subjects = {"orders.>"}}));
//
// Thread safety: every method from any thread (the client is thread-safe).

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fnbus::nats {

// TLS: set to connect with tls:// (or to a server that requires TLS).
struct TlsOptions {
  std::string ca_file;    // PEM file of the CAs to trust; empty: the system's
  std::string cert_file;  // client certificate chain (mutual TLS), PEM
  std::string key_file;   // its private key, PEM
};

// At most one way of authenticating: user and password, a .creds file
// (a JWT and its NKey seed, as `nsc` writes them), or an NKey.
struct Credentials {
  std::string user;
  std::string password;
  std::string creds_file;
  std::string nkey_public;     // the NKey's public key ("U...")
  std::string nkey_seed_file;  // the file holding its seed ("SU...")
};

struct ConnectOptions {
  // One URL or several, comma-separated (a cluster's seeds), each
  // nats://, tls:// or host:port.
  std::string url = "nats://127.0.0.1:4222";
  // Shown by the server's monitoring (connz) for this client.
  std::string name = "fnbus";
  Credentials credentials = {};
  std::optional<TlsOptions> tls = {};
  // How long one connection attempt may take.
  std::chrono::milliseconds connect_timeout = std::chrono::seconds(2);
  // After a lost connection: attempts per server (-1: forever), and the
  // wait between two attempts on one server.
  int max_reconnects = -1;
  std::chrono::milliseconds reconnect_wait = std::chrono::milliseconds(250);
};

// A JetStream stream, as ensure_stream() creates it.
struct StreamOptions {
  std::string name;                   // e.g. "ORDERS"
  std::vector<std::string> subjects;  // e.g. {"orders.>"}
  int replicas = 1;                   // 1 .. 5 (a cluster's size at most)
  bool in_memory = false;             // default: file storage
  // JetStream drops a message whose id (Nats-Msg-Id) it saw within this
  // window: the exporter's de-duplication.
  std::chrono::milliseconds duplicate_window = std::chrono::minutes(2);
};

// Counts since Connect(), for metrics and tests.
struct ConnectionStats {
  std::uint64_t reconnects = 0;
  std::uint64_t disconnects = 0;
};

class Connection {
 public:
  // Connects (one attempt per server, each within connect_timeout) and
  // opens JetStream. Errors: InvalidArgument (bad options: two ways of
  // authenticating, a TLS file that cannot be read, a malformed URL),
  // Unavailable (no server answered), PermissionDenied (the server refused
  // the credentials, or wants some), FailedPrecondition (TLS required by
  // one side only).
  static absl::StatusOr<std::unique_ptr<Connection>> Connect(
      ConnectOptions options);
  ~Connection();

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Creates the stream, or updates it if one of that name exists (its
  // subjects, replicas, window). InvalidArgument for bad options,
  // Unavailable if JetStream does not answer (not enabled on the server?).
  absl::Status ensure_stream(const StreamOptions& options);
  // OK if the stream exists; NotFound saying how to create it otherwise.
  absl::Status check_stream(std::string_view name);

  // Whether the client is connected now (false while reconnecting).
  [[nodiscard]] bool connected() const noexcept;
  [[nodiscard]] ConnectionStats stats() const noexcept;
  [[nodiscard]] const std::string& url() const noexcept;

  // For the bridge's parts: the client's handles (natsConnection*,
  // jsCtx*), valid while this Connection lives.
  struct Handles;
  [[nodiscard]] const Handles& handles() const noexcept;

  struct State;  // internal (src/nats/connection.cpp)

 private:
  explicit Connection(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace fnbus::nats
