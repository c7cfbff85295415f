// fnbus::nats::Exporter over the NATS C client's asynchronous JetStream
// publishing (js_PublishMsgAsync with an acknowledgement handler).
//
// Protocol (one Core, one mutex):
// - send() (a bus worker) and the retry thread publish a Pending: it goes
//   into table_ under its natsMsg* BEFORE js_PublishMsgAsync, since the
//   acknowledgement may arrive before that call returns.
// - on_ack() (the client's callback thread) takes it back out by the same
//   pointer, then counts it acknowledged, or schedules a resend (retries_,
//   served by the retry thread), or dead-letters it.
// - outstanding_ counts the Pendings not yet acknowledged or
//   dead-lettered, wherever they are (table_, retries_, a thread between
//   the two); flush() waits for it to reach 0. Each callback's last access
//   to the Core is its decrement (or insertion) under mutex_, which the
//   destructor's final wait orders before the Core goes.

#include "fnbus/nats/exporter.hpp"

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "fmt/format.h"
#include "fmt/ranges.h"
#include "src/nats/handles.hpp"

#include "fnbus/random.hpp"

namespace fnbus::nats {

struct Exporter::Route {
  std::string subject;
  std::string function_name;  // "export:<subject>"
  // Counters of this subject. Incremented (relaxed) by the publishing and
  // callback threads, read by stats(): independent statistics. A Pending's
  // acknowledged/dead_lettered increment precedes its outstanding_
  // decrement under Core::mutex_, so after flush() returns OK the counters
  // read exported == acknowledged + dead_lettered.
  std::atomic<std::uint64_t> exported{0};
  std::atomic<std::uint64_t> acknowledged{0};
  std::atomic<std::uint64_t> duplicates{0};
  std::atomic<std::uint64_t> retried{0};
  std::atomic<std::uint64_t> dead_lettered{0};
};

namespace {

using Steady = std::chrono::steady_clock;

// One exported event until JetStream acknowledges it or it is given up.
struct Pending {
  Exporter::Route* route = nullptr;
  std::string message_id;
  std::string payload;
  std::string event_type;
  EventTrace trace;
  OwnedEvent event;            // the copy a dead letter shows
  std::uint32_t attempts = 0;  // publishes tried
  absl::Status last_error;
};

// `value` as 16 lower-case hex digits.
std::string hex(std::uint64_t value) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, value >>= 4) {
    out[static_cast<std::size_t>(i)] = kDigits[value & 0xF];
  }
  return out;
}

// The message of `pending`, headers set; null on failure (`status` says).
natsMsg* make_message(const Pending& pending, natsStatus& status) {
  natsMsg* msg = nullptr;
  status = natsMsg_Create(&msg, pending.route->subject.c_str(), nullptr,
                          pending.payload.data(),
                          static_cast<int>(pending.payload.size()));
  // The header names are string literals (codec.hpp): NUL-terminated.
  const std::pair<std::string_view, std::string> headers[] = {
      {kMessageIdHeader, pending.message_id},
      {kCorrelationHeader, hex(pending.trace.context.correlation_id)},
      {kEventIdHeader, hex(pending.trace.event_id)},
      {kEventTypeHeader, pending.event_type}};
  for (const auto& [name, value] : headers) {
    if (status == NATS_OK) {
      status = natsMsgHeader_Set(msg, name.data(), value.c_str());
    }
  }
  if (status != NATS_OK) {
    natsMsg_Destroy(msg);
    return nullptr;
  }
  return msg;
}

// A failed publish of `pending`, as a Status that says what to do.
absl::Status publish_error(const Pending& pending, natsStatus err,
                           std::string_view text) {
  const std::string doing =
      fmt::format("publishing {} to JetStream subject {} (attempt {})",
                  pending.event_type, pending.route->subject, pending.attempts);
  const std::string detail =
      text.empty() ? std::string(natsStatus_GetText(err)) : std::string(text);
  switch (err) {
    case NATS_NO_RESPONDERS:
      return absl::NotFoundError(
          fmt::format("{}: no stream captures the subject ({}); create one "
                      "(Connection::ensure_stream) whose subjects include it",
                      doing, detail));
    case NATS_TIMEOUT:
      return absl::DeadlineExceededError(fmt::format(
          "{}: no acknowledgement within ExporterOptions::ack_timeout ({}); "
          "is the server up and JetStream enabled?",
          doing, detail));
    default:
      return absl::UnavailableError(fmt::format("{}: {}", doing, detail));
  }
}

void on_ack(jsCtx*, natsMsg* msg, jsPubAck* ack, jsPubAckErr* error,
            void* closure);

}  // namespace

struct Exporter::Core {
  Core(Connection& on, ExporterOptions given, resilience::Backoff waits)
      : connection(on),
        options(std::move(given)),
        backoff(waits),
        instance(detail::thread_random().next()),
        random(detail::thread_random().next()) {}

  absl::Status open();
  // `fresh`: a new event (counted in outstanding here), not a resend.
  void publish(std::unique_ptr<Pending> pending, bool fresh) noexcept;
  void acknowledged(natsMsg* msg, const jsPubAck* ack,
                    const jsPubAckErr* error) noexcept;
  void failed(std::unique_ptr<Pending> pending, absl::Status error) noexcept;
  void dead_letter(std::unique_ptr<Pending> pending) noexcept;
  void resolved() noexcept;
  void run_retries() noexcept;
  absl::Status flush(std::chrono::milliseconds timeout);
  void close() noexcept;
  void give_up_unacknowledged() noexcept;
  [[nodiscard]] std::string next_message_id() {
    // relaxed: only uniqueness matters, which the RMW gives.
    return fmt::format("{:016x}-{}", instance,
                       sequence.fetch_add(1, std::memory_order_relaxed));
  }

  Connection& connection;
  const ExporterOptions options;
  const resilience::Backoff backoff;
  const std::uint64_t instance;  // the exporter's random id
  // Numbers the default message ids. RMW by the bus workers (relaxed:
  // uniqueness only).
  std::atomic<std::uint64_t> sequence{0};
  jsCtx* jetstream = nullptr;

  std::mutex mutex;
  std::condition_variable retry_cv;  // the retry thread: new or stop
  std::condition_variable done_cv;   // flush(): outstanding reached 0
  std::unordered_map<natsMsg*, std::unique_ptr<Pending>> table;
  std::multimap<Steady::time_point, std::unique_ptr<Pending>> retries;
  std::size_t outstanding = 0;
  bool closing = false;  // failures are dead-lettered, not resent
  Random random;         // backoff jitter, under mutex
  std::thread retry_thread;

  std::mutex routes_mutex;  // routes and subscriptions
  std::vector<std::unique_ptr<Route>> routes;
  std::vector<Subscription> subscriptions;
};

namespace {

void on_ack(jsCtx*, natsMsg* msg, jsPubAck* ack, jsPubAckErr* error,
            void* closure) {
  static_cast<Exporter::Core*>(closure)->acknowledged(msg, ack, error);
  natsMsg_Destroy(msg);
}

}  // namespace

absl::Status Exporter::Core::open() {
  jsOptions js_options;
  jsOptions_Init(&js_options);
  js_options.PublishAsync.MaxPending =
      static_cast<std::int64_t>(options.max_in_flight);
  js_options.PublishAsync.AckHandler = on_ack;
  js_options.PublishAsync.AckHandlerClosure = this;
  js_options.PublishAsync.StallWait = options.ack_timeout.count();
  if (natsStatus s = natsConnection_JetStream(
          &jetstream, connection.handles().connection, &js_options);
      s != NATS_OK) {
    return internal::to_status(
        s, fmt::format("opening the exporter's JetStream context at {}",
                       connection.url()));
  }
  retry_thread = std::thread([this] { run_retries(); });
  return absl::OkStatus();
}

void Exporter::Core::publish(std::unique_ptr<Pending> pending,
                             bool fresh) noexcept {
  ++pending->attempts;
  natsStatus s = NATS_OK;
  natsMsg* msg = make_message(*pending, s);
  {
    std::lock_guard lock(mutex);
    if (fresh) ++outstanding;
    if (msg != nullptr) table.emplace(msg, std::move(pending));
  }
  if (msg == nullptr) {
    const absl::Status error = publish_error(*pending, s, "");
    failed(std::move(pending), error);
    return;
  }
  jsPubOptions publish_options;
  jsPubOptions_Init(&publish_options);
  publish_options.MaxWait = options.ack_timeout.count();
  s = js_PublishMsgAsync(jetstream, &msg, &publish_options);
  if (s == NATS_OK) return;  // msg is the client's now
  std::unique_ptr<Pending> back;
  {
    std::lock_guard lock(mutex);
    auto node = table.extract(msg);
    back = std::move(node.mapped());
  }
  natsMsg_Destroy(msg);
  const absl::Status error =
      publish_error(*back, s, nats_GetLastError(nullptr));
  failed(std::move(back), error);
}

void Exporter::Core::acknowledged(natsMsg* msg, const jsPubAck* ack,
                                  const jsPubAckErr* error) noexcept {
  std::unique_ptr<Pending> pending;
  {
    std::lock_guard lock(mutex);
    auto node = table.extract(msg);
    if (node.empty()) return;  // taken back by close()
    pending = std::move(node.mapped());
    if (ack != nullptr) {
      // relaxed: statistics, counted before the decrement that flush()
      // waits for (see Route).
      pending->route->acknowledged.fetch_add(1, std::memory_order_relaxed);
      if (ack->Duplicate) {
        pending->route->duplicates.fetch_add(1, std::memory_order_relaxed);
      }
      // As resolved(), in the same critical section (one lock per ack);
      // the last access to the Core (see the file comment).
      if (--outstanding == 0) done_cv.notify_all();
      return;  // `pending` is freed after the lock is released
    }
  }
  const natsStatus err = error != nullptr ? error->Err : NATS_ERR;
  const char* text = error != nullptr ? error->ErrText : nullptr;
  const absl::Status status =
      publish_error(*pending, err, text != nullptr ? text : "");
  failed(std::move(pending), status);
}

void Exporter::Core::failed(std::unique_ptr<Pending> pending,
                            absl::Status error) noexcept {
  pending->last_error = std::move(error);
  if (pending->attempts < options.max_attempts) {
    std::lock_guard lock(mutex);
    if (!closing) {
      const Steady::time_point due =
          Steady::now() + backoff.delay(pending->attempts, random);
      // relaxed: a statistic (see Route).
      pending->route->retried.fetch_add(1, std::memory_order_relaxed);
      retries.emplace(due, std::move(pending));
      // Under the lock: the retry thread cannot miss it, and this is the
      // callback's last access to the Core (see the file comment).
      retry_cv.notify_one();
      return;
    }
  }
  dead_letter(std::move(pending));
}

void Exporter::Core::dead_letter(std::unique_ptr<Pending> pending) noexcept {
  const DeadLetter letter{.event = pending->event.ref(),
                          .reason = DeadLetterReason::kExportFailed,
                          .trace = pending->trace,
                          .function = pending->route->function_name,
                          .attempts = pending->attempts,
                          .last_error = pending->last_error};
  try {
    options.dead_letter(letter);
  } catch (...) {  // NOLINT(bugprone-empty-catch): a sink must not stop us
  }
  // relaxed: a statistic, ordered before resolved()'s lock (see Route).
  pending->route->dead_lettered.fetch_add(1, std::memory_order_relaxed);
  resolved();
}

void Exporter::Core::resolved() noexcept {
  std::lock_guard lock(mutex);
  --outstanding;
  // Under the lock: close() may destroy the Core once it sees 0.
  if (outstanding == 0) done_cv.notify_all();
}

void Exporter::Core::run_retries() noexcept {
  std::unique_lock lock(mutex);
  while (!closing) {
    if (retries.empty()) {
      retry_cv.wait(lock);
      continue;
    }
    const auto first = retries.begin();
    if (first->first > Steady::now()) {
      retry_cv.wait_until(lock, first->first);
      continue;
    }
    std::unique_ptr<Pending> pending = std::move(first->second);
    retries.erase(first);
    lock.unlock();
    publish(std::move(pending), /*fresh=*/false);
    lock.lock();
  }
}

absl::Status Exporter::Core::flush(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex);
  if (done_cv.wait_for(lock, timeout, [&] { return outstanding == 0; })) {
    return absl::OkStatus();
  }
  return absl::DeadlineExceededError(fmt::format(
      "Exporter::flush: {} events still in flight after {} ms (waiting for "
      "JetStream's acknowledgement or a resend); is the server reachable? "
      "Call flush() again or give it longer",
      outstanding, timeout.count()));
}

void Exporter::Core::close() noexcept {
  {
    std::lock_guard lock(mutex);
    closing = true;
    retry_cv.notify_one();
  }
  if (retry_thread.joinable()) retry_thread.join();
  give_up_unacknowledged();
  {
    std::unique_lock lock(mutex);
    done_cv.wait(lock, [&] { return outstanding == 0; });
  }
  if (jetstream != nullptr) jsCtx_Destroy(jetstream);
}

// close(): dead-letters the resends still waiting, and the messages the
// client still waits an acknowledgement for (taken back from it, so that
// no callback comes for them).
void Exporter::Core::give_up_unacknowledged() noexcept {
  std::vector<std::unique_ptr<Pending>> lost;
  bool waiting = false;
  {
    std::lock_guard lock(mutex);
    waiting = !table.empty();
  }
  // Only when something was published: nats.c 3.4.1 crashes in
  // js_PublishAsyncGetPendingList on a context that never published
  // asynchronously. (Nothing is published any more: the functions are
  // unsubscribed and the retry thread joined.)
  natsMsgList pending_list{};
  const bool taken =
      waiting && jetstream != nullptr &&
      js_PublishAsyncGetPendingList(&pending_list, jetstream) == NATS_OK;
  {
    std::lock_guard lock(mutex);
    for (auto& [due, pending] : retries) lost.push_back(std::move(pending));
    retries.clear();
    for (int i = 0; taken && i < pending_list.Count; ++i) {
      auto node = table.extract(pending_list.Msgs[i]);
      if (!node.empty()) lost.push_back(std::move(node.mapped()));
    }
  }
  if (taken) natsMsgList_Destroy(&pending_list);
  for (std::unique_ptr<Pending>& pending : lost) {
    if (pending->last_error.ok()) {
      pending->last_error = absl::CancelledError(fmt::format(
          "the Exporter was destroyed before JetStream acknowledged the "
          "publish to {} (ExporterOptions::close_timeout {} ms)",
          pending->route->subject, options.close_timeout.count()));
    }
    dead_letter(std::move(pending));
  }
}

namespace {

// Every bad option of `options`, each saying what to use.
std::vector<std::string> option_problems(const ExporterOptions& options) {
  std::vector<std::string> problems;
  if (options.max_in_flight < 1 || options.max_in_flight > 1'000'000) {
    problems.push_back(
        fmt::format("max_in_flight is {}; use 1 to 1000000 (e.g. 4096)",
                    options.max_in_flight));
  }
  if (options.max_attempts < 1 || options.max_attempts > 1000) {
    problems.push_back(
        fmt::format("max_attempts is {}; use 1 to 1000", options.max_attempts));
  }
  constexpr auto kHour = std::chrono::hours(1);
  if (options.ack_timeout.count() <= 0 || options.ack_timeout > kHour) {
    problems.push_back(
        fmt::format("ack_timeout is {} ms; use more than 0, at most 1 hour",
                    options.ack_timeout.count()));
  }
  if (options.close_timeout.count() < 0 || options.close_timeout > kHour) {
    problems.push_back(fmt::format("close_timeout is {} ms; use 0 to 1 hour",
                                   options.close_timeout.count()));
  }
  if (!options.dead_letter) {
    problems.push_back(
        "dead_letter is empty; give the sink of events that cannot be "
        "exported, e.g. a resilience::DeadLetterStore's sink()");
  }
  return problems;
}

// Why `subject` cannot be published to, or empty.
std::string subject_problem(std::string_view subject) {
  if (subject.empty()) return "is empty; use e.g. \"orders.placed\"";
  if (subject.front() == '.' || subject.back() == '.' ||
      subject.find("..") != std::string_view::npos) {
    return "has an empty token; separate tokens with single dots";
  }
  for (const char c : subject) {
    if (c <= ' ' || c > '~' || c == '*' || c == '>' || c == '"' || c == '\\') {
      return "holds a wildcard, whitespace, a quote, a backslash or a "
             "non-ASCII byte; export to a literal subject such as "
             "\"orders.placed\"";
    }
  }
  return {};
}

}  // namespace

absl::StatusOr<std::unique_ptr<Exporter>> Exporter::Create(
    EventBus& bus, Connection& connection, ExporterOptions options) {
  std::vector<std::string> problems = option_problems(options);
  absl::StatusOr<resilience::Backoff> backoff =
      resilience::Backoff::Create(options.backoff);
  if (!backoff.ok()) {
    problems.push_back(
        fmt::format("backoff: {}", std::string(backoff.status().message())));
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError(
        fmt::format("invalid ExporterOptions: {}", fmt::join(problems, "; ")));
  }
  auto core = std::make_unique<Core>(connection, std::move(options), *backoff);
  if (absl::Status opened = core->open(); !opened.ok()) return opened;
  return std::unique_ptr<Exporter>(new Exporter(bus, std::move(core)));
}

Exporter::Exporter(EventBus& bus, std::unique_ptr<Core> core)
    : bus_(bus), core_(std::move(core)) {}

Exporter::~Exporter() {
  std::vector<Subscription> subscriptions;
  {
    std::lock_guard lock(core_->routes_mutex);
    subscriptions.swap(core_->subscriptions);
  }
  // Cancelling waits for the functions' calls under way: nothing is sent
  // after this.
  for (Subscription& s : subscriptions) s.cancel();
  (void)core_->flush(core_->options.close_timeout);
  core_->close();
}

absl::StatusOr<Exporter::Route*> Exporter::add_route(
    std::string_view subject, std::string_view event_type, bool has_encoder) {
  if (std::string problem = subject_problem(subject); !problem.empty()) {
    return absl::InvalidArgumentError(fmt::format(
        "ExportRoute<{}>::subject \"{}\" {}", event_type, subject, problem));
  }
  if (!has_encoder) {
    return absl::InvalidArgumentError(fmt::format(
        "ExportRoute<{}> (subject {}) has no codec.encode; give the function "
        "that writes the event as bytes",
        event_type, subject));
  }
  std::lock_guard lock(core_->routes_mutex);
  for (const std::unique_ptr<Route>& route : core_->routes) {
    if (route->subject == subject) return route.get();
  }
  auto route = std::make_unique<Route>();
  route->subject = std::string(subject);
  route->function_name = fmt::format("export:{}", subject);
  core_->routes.push_back(std::move(route));
  return core_->routes.back().get();
}

void Exporter::keep(Subscription subscription) {
  std::lock_guard lock(core_->routes_mutex);
  core_->subscriptions.push_back(std::move(subscription));
}

const std::string& Exporter::function_name(const Route& route) {
  return route.function_name;
}

absl::Status Exporter::send(Route& route, std::string payload,
                            std::string message_id, const EventTrace& trace,
                            OwnedEvent event) {
  auto pending = std::make_unique<Pending>();
  pending->route = &route;
  pending->message_id =
      message_id.empty() ? core_->next_message_id() : std::move(message_id);
  pending->payload = std::move(payload);
  pending->event_type = std::string(event.type_name());
  pending->trace = trace;
  pending->event = std::move(event);
  // relaxed: a statistic (see Route).
  route.exported.fetch_add(1, std::memory_order_relaxed);
  core_->publish(std::move(pending), /*fresh=*/true);
  return absl::OkStatus();
}

absl::Status Exporter::flush(std::chrono::milliseconds timeout) {
  return core_->flush(timeout);
}

namespace {

ExportStats read(const Exporter::Route& route) {
  // relaxed: statistics (see Route).
  ExportStats s{
      .exported = route.exported.load(std::memory_order_relaxed),
      .acknowledged = route.acknowledged.load(std::memory_order_relaxed),
      .duplicates = route.duplicates.load(std::memory_order_relaxed),
      .retried = route.retried.load(std::memory_order_relaxed),
      .dead_lettered = route.dead_lettered.load(std::memory_order_relaxed)};
  const std::uint64_t done = s.acknowledged + s.dead_lettered;
  s.in_flight = s.exported > done ? s.exported - done : 0;
  return s;
}

}  // namespace

std::vector<SubjectExportStats> Exporter::subject_stats() const {
  std::lock_guard lock(core_->routes_mutex);
  std::vector<SubjectExportStats> out;
  out.reserve(core_->routes.size());
  for (const std::unique_ptr<Route>& route : core_->routes) {
    out.push_back({.subject = route->subject, .stats = read(*route)});
  }
  return out;
}

ExportStats Exporter::stats() const {
  ExportStats total;
  for (const SubjectExportStats& s : subject_stats()) {
    total.exported += s.stats.exported;
    total.acknowledged += s.stats.acknowledged;
    total.duplicates += s.stats.duplicates;
    total.retried += s.stats.retried;
    total.dead_lettered += s.stats.dead_lettered;
    total.in_flight += s.stats.in_flight;
  }
  return total;
}

void Exporter::append_prometheus(std::string& out) const {
  const std::vector<SubjectExportStats> subjects = subject_stats();
  if (subjects.empty()) return;
  struct Family {
    std::string_view name, type, help;
    std::uint64_t ExportStats::*field;
  };
  static constexpr Family kFamilies[] = {
      {"fnbus_nats_exported_total", "counter",
       "Events accepted for publishing to a JetStream subject.",
       &ExportStats::exported},
      {"fnbus_nats_export_acknowledged_total", "counter",
       "Exported events JetStream acknowledged (duplicates included).",
       &ExportStats::acknowledged},
      {"fnbus_nats_export_duplicates_total", "counter",
       "Acknowledged events JetStream dropped as duplicates.",
       &ExportStats::duplicates},
      {"fnbus_nats_export_retried_total", "counter",
       "Resends after a failed or unacknowledged publish.",
       &ExportStats::retried},
      {"fnbus_nats_export_dead_lettered_total", "counter",
       "Exported events given up (dead-letter reason export_failed).",
       &ExportStats::dead_lettered},
      {"fnbus_nats_export_in_flight", "gauge",
       "Exported events waiting for an acknowledgement or a resend.",
       &ExportStats::in_flight}};
  // Subjects hold no `"`, `\` or newline (add() refuses them): label
  // values need no escaping.
  for (const Family& family : kFamilies) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", family.name, family.help,
                       family.name, family.type);
    for (const SubjectExportStats& s : subjects) {
      out += fmt::format("{}{{subject=\"{}\"}} {}\n", family.name, s.subject,
                         s.stats.*family.field);
    }
  }
}

}  // namespace fnbus::nats
