// fnbus::nats::Connection over the NATS C client (nats.c 3.x).

#include "fnbus/nats/connection.hpp"

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "fmt/format.h"
#include "src/nats/handles.hpp"

namespace fnbus::nats {
namespace internal {

absl::Status to_status(natsStatus status, std::string_view doing) {
  const char* last = nats_GetLastError(nullptr);
  const std::string detail = last != nullptr && *last != '\0'
                                 ? std::string(last)
                                 : std::string(natsStatus_GetText(status));
  switch (status) {
    case NATS_NO_SERVER:
      return absl::UnavailableError(fmt::format(
          "{}: no NATS server answered ({}); start one (nats-server -js) "
          "or fix ConnectOptions::url",
          doing, detail));
    case NATS_CONNECTION_AUTH_FAILED:
    case NATS_NOT_PERMITTED:
      return absl::PermissionDeniedError(fmt::format(
          "{}: the server refused this client ({}); check "
          "ConnectOptions::credentials (user/password, creds_file or nkey)",
          doing, detail));
    case NATS_SECURE_CONNECTION_REQUIRED:
    case NATS_SECURE_CONNECTION_WANTED:
      return absl::FailedPreconditionError(
          fmt::format("{}: TLS is required by one side only ({}); set or clear "
                      "ConnectOptions::tls to match the server",
                      doing, detail));
    case NATS_SSL_ERROR:
      return absl::FailedPreconditionError(
          fmt::format("{}: TLS failed ({}); check ConnectOptions::tls (CA, "
                      "certificate, key) and the server's certificate",
                      doing, detail));
    case NATS_TIMEOUT:
      return absl::DeadlineExceededError(
          fmt::format("{}: timed out ({})", doing, detail));
    case NATS_NOT_FOUND:
      return absl::NotFoundError(
          fmt::format("{}: not found ({})", doing, detail));
    case NATS_INVALID_ARG:
      return absl::InvalidArgumentError(
          fmt::format("{}: invalid argument ({})", doing, detail));
    default:
      return absl::UnknownError(fmt::format("{}: {}", doing, detail));
  }
}

}  // namespace internal

using internal::to_status;

struct Connection::State {
  ConnectOptions options;
  Handles handles;
  // Counted by the client's callbacks, on its callback thread; read by
  // stats(). relaxed: independent statistics.
  std::atomic<std::uint64_t> reconnects{0};
  std::atomic<std::uint64_t> disconnects{0};
  // Set by the closed callback, the client's last call into this State:
  // the destructor waits for it before the memory goes.
  std::mutex closed_mutex;
  std::condition_variable closed_cv;
  bool closed = false;

  ~State() {
    if (handles.jetstream != nullptr) jsCtx_Destroy(handles.jetstream);
    if (handles.connection != nullptr) {
      natsConnection_Close(handles.connection);
      {
        std::unique_lock lock(closed_mutex);
        closed_cv.wait(lock, [&] { return closed; });
      }
      natsConnection_Destroy(handles.connection);
    }
  }
};

namespace {

// Owns a natsOptions while Connect() fills it.
struct OptionsHandle {
  natsOptions* raw = nullptr;
  ~OptionsHandle() {
    if (raw != nullptr) natsOptions_Destroy(raw);
  }
};

// The client's disconnected and reconnected callbacks: `closure` is the
// State's counter of that event.
void count_event(natsConnection*, void* closure) {
  // relaxed: a statistic.
  static_cast<std::atomic<std::uint64_t>*>(closure)->fetch_add(
      1, std::memory_order_relaxed);
}

// The client's closed callback (its last for a connection).
void mark_closed(natsConnection*, void* closure) {
  auto& state = *static_cast<Connection::State*>(closure);
  // Notified under the lock: the destructor cannot return (and free the
  // State) before this call is done with it.
  std::lock_guard lock(state.closed_mutex);
  state.closed = true;
  state.closed_cv.notify_all();
}

absl::Status check_options(const ConnectOptions& options) {
  if (options.url.empty()) {
    return absl::InvalidArgumentError(
        "ConnectOptions::url is empty; use e.g. nats://127.0.0.1:4222");
  }
  const Credentials& c = options.credentials;
  const int ways =
      (!c.user.empty() || !c.password.empty() ? 1 : 0) +
      (!c.creds_file.empty() ? 1 : 0) +
      (!c.nkey_public.empty() || !c.nkey_seed_file.empty() ? 1 : 0);
  if (ways > 1) {
    return absl::InvalidArgumentError(
        "ConnectOptions::credentials sets more than one way of "
        "authenticating; use user/password, creds_file or "
        "nkey_public + nkey_seed_file");
  }
  if (c.nkey_public.empty() != c.nkey_seed_file.empty()) {
    return absl::InvalidArgumentError(
        "ConnectOptions::credentials: an NKey needs both nkey_public and "
        "nkey_seed_file");
  }
  if (options.connect_timeout.count() <= 0 ||
      options.reconnect_wait.count() < 0) {
    return absl::InvalidArgumentError(fmt::format(
        "ConnectOptions: connect_timeout ({} ms) must be positive and "
        "reconnect_wait ({} ms) at least 0",
        options.connect_timeout.count(), options.reconnect_wait.count()));
  }
  return absl::OkStatus();
}

// Fills `opts` from `options`; a failure names the option at fault.
absl::Status fill(natsOptions* opts, Connection::State& state) {
  const ConnectOptions& options = state.options;
  auto step = [](natsStatus s, std::string_view what) {
    return s == NATS_OK ? absl::OkStatus()
                        : absl::InvalidArgumentError(fmt::format(
                              "ConnectOptions::{} was refused by the NATS "
                              "client ({}); fix it",
                              what, natsStatus_GetText(s)));
  };
  // natsOptions_SetURL takes one URL: a comma-separated list (a cluster's
  // seeds) goes to natsOptions_SetServers, one entry each.
  std::vector<std::string> urls =
      absl::StrSplit(options.url, ',', absl::SkipWhitespace());
  for (std::string& url : urls) absl::StripAsciiWhitespace(&url);
  std::vector<const char*> servers;
  for (const std::string& url : urls) servers.push_back(url.c_str());
  absl::Status status =
      urls.size() > 1
          ? step(natsOptions_SetServers(opts, servers.data(),
                                        static_cast<int>(servers.size())),
                 "url")
          : step(natsOptions_SetURL(opts, options.url.c_str()), "url");
  if (status.ok())
    status = step(natsOptions_SetName(opts, options.name.c_str()), "name");
  if (status.ok()) {
    status = step(natsOptions_SetTimeout(opts, options.connect_timeout.count()),
                  "connect_timeout");
  }
  if (status.ok()) {
    status = step(natsOptions_SetMaxReconnect(opts, options.max_reconnects),
                  "max_reconnects");
  }
  if (status.ok()) {
    status =
        step(natsOptions_SetReconnectWait(opts, options.reconnect_wait.count()),
             "reconnect_wait");
  }
  if (status.ok()) {
    status = step(
        natsOptions_SetDisconnectedCB(opts, count_event, &state.disconnects),
        "(disconnect callback)");
  }
  if (status.ok()) {
    status =
        step(natsOptions_SetReconnectedCB(opts, count_event, &state.reconnects),
             "(reconnect callback)");
  }
  if (status.ok()) {
    status = step(natsOptions_SetClosedCB(opts, mark_closed, &state),
                  "(closed callback)");
  }
  const Credentials& c = options.credentials;
  if (status.ok() && !c.user.empty()) {
    status =
        step(natsOptions_SetUserInfo(opts, c.user.c_str(), c.password.c_str()),
             "credentials.user");
  }
  if (status.ok() && !c.creds_file.empty()) {
    status = step(natsOptions_SetUserCredentialsFromFiles(
                      opts, c.creds_file.c_str(), nullptr),
                  "credentials.creds_file");
  }
  if (status.ok() && !c.nkey_public.empty()) {
    status = step(natsOptions_SetNKeyFromSeed(opts, c.nkey_public.c_str(),
                                              c.nkey_seed_file.c_str()),
                  "credentials.nkey_seed_file");
  }
  if (status.ok() && options.tls) {
    status = step(natsOptions_SetSecure(opts, true), "tls");
    if (status.ok() && !options.tls->ca_file.empty()) {
      status = step(natsOptions_LoadCATrustedCertificates(
                        opts, options.tls->ca_file.c_str()),
                    "tls.ca_file");
    }
    if (status.ok() && !options.tls->cert_file.empty()) {
      status = step(natsOptions_LoadCertificatesChain(
                        opts, options.tls->cert_file.c_str(),
                        options.tls->key_file.c_str()),
                    "tls.cert_file / tls.key_file");
    }
  }
  return status;
}

}  // namespace

Connection::Connection(std::unique_ptr<State> state)
    : state_(std::move(state)) {}

Connection::~Connection() = default;

absl::StatusOr<std::unique_ptr<Connection>> Connection::Connect(
    ConnectOptions options) {
  if (absl::Status bad = check_options(options); !bad.ok()) return bad;
  auto state = std::make_unique<State>();
  state->options = std::move(options);
  OptionsHandle opts;
  if (natsStatus s = natsOptions_Create(&opts.raw); s != NATS_OK) {
    return to_status(s, "creating NATS options");
  }
  if (absl::Status bad = fill(opts.raw, *state); !bad.ok()) {
    return bad;
  }
  const std::string doing = fmt::format("connecting to {}", state->options.url);
  if (natsStatus s =
          natsConnection_Connect(&state->handles.connection, opts.raw);
      s != NATS_OK) {
    return to_status(s, doing);
  }
  if (natsStatus s = natsConnection_JetStream(
          &state->handles.jetstream, state->handles.connection, nullptr);
      s != NATS_OK) {
    return to_status(
        s, fmt::format("opening JetStream at {}", state->options.url));
  }
  return std::unique_ptr<Connection>(new Connection(std::move(state)));
}

absl::Status Connection::ensure_stream(const StreamOptions& options) {
  if (options.name.empty() || options.subjects.empty()) {
    return absl::InvalidArgumentError(
        "StreamOptions needs a name and at least one subject, e.g. "
        "{.name = \"ORDERS\", .subjects = {\"orders.>\"}}");
  }
  if (options.replicas < 1 || options.replicas > 5) {
    return absl::InvalidArgumentError(fmt::format(
        "StreamOptions::replicas is {}; use 1 to 5", options.replicas));
  }
  std::vector<const char*> subjects;
  subjects.reserve(options.subjects.size());
  for (const std::string& s : options.subjects) subjects.push_back(s.c_str());
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  config.Name = options.name.c_str();
  config.Subjects = subjects.data();
  config.SubjectsLen = static_cast<int>(subjects.size());
  config.Replicas = options.replicas;
  config.Storage = options.in_memory ? js_MemoryStorage : js_FileStorage;
  config.Duplicates = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          options.duplicate_window)
                          .count();
  jsStreamInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&info, state_->handles.jetstream,
                                  options.name.c_str(), nullptr, &code);
  if (info != nullptr) jsStreamInfo_Destroy(info);
  info = nullptr;
  const bool exists = s == NATS_OK;
  if (!exists && s != NATS_NOT_FOUND) {
    return to_status(s, fmt::format("looking up stream {} at {} (is "
                                    "JetStream enabled: nats-server -js?)",
                                    options.name, state_->options.url));
  }
  s = exists ? js_UpdateStream(&info, state_->handles.jetstream, &config,
                               nullptr, &code)
             : js_AddStream(&info, state_->handles.jetstream, &config, nullptr,
                            &code);
  if (info != nullptr) jsStreamInfo_Destroy(info);
  if (s != NATS_OK) {
    return to_status(s,
                     fmt::format("{} stream {} at {} (JetStream error {})",
                                 exists ? "updating" : "creating", options.name,
                                 state_->options.url, static_cast<int>(code)));
  }
  return absl::OkStatus();
}

absl::Status Connection::check_stream(std::string_view name) {
  const std::string stream(name);
  jsStreamInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  const natsStatus s = js_GetStreamInfo(&info, state_->handles.jetstream,
                                        stream.c_str(), nullptr, &code);
  if (info != nullptr) jsStreamInfo_Destroy(info);
  if (s == NATS_NOT_FOUND) {
    return absl::NotFoundError(fmt::format(
        "no JetStream stream {} at {}; create it (Connection::ensure_stream "
        "or `nats stream add {}`)",
        stream, state_->options.url, stream));
  }
  if (s != NATS_OK) {
    return to_status(s, fmt::format("looking up stream {} at {}", stream,
                                    state_->options.url));
  }
  return absl::OkStatus();
}

bool Connection::connected() const noexcept {
  return natsConnection_Status(state_->handles.connection) ==
         NATS_CONN_STATUS_CONNECTED;
}

ConnectionStats Connection::stats() const noexcept {
  // relaxed: see State.
  return {.reconnects = state_->reconnects.load(std::memory_order_relaxed),
          .disconnects = state_->disconnects.load(std::memory_order_relaxed)};
}

const std::string& Connection::url() const noexcept {
  return state_->options.url;
}

const Connection::Handles& Connection::handles() const noexcept {
  return state_->handles;
}

}  // namespace fnbus::nats
