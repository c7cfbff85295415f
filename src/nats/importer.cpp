// fnbus::nats::Importer: a durable pull consumer whose messages become
// events on the local bus, acknowledged as those events settle
// (PublishOptions::on_settled).

#include "fnbus/nats/importer.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fmt/format.h"
#include "src/nats/handles.hpp"

namespace fnbus::nats {
namespace {

using internal::to_status;

std::int64_t nanoseconds(std::chrono::milliseconds duration) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(duration).count();
}

// A trace header's value (16 hex digits, as the Exporter writes it), or 0.
std::uint64_t header_number(natsMsg* msg, std::string_view name) {
  const char* value = nullptr;
  if (natsMsgHeader_Get(msg, std::string(name).c_str(), &value) != NATS_OK ||
      value == nullptr) {
    return 0;
  }
  std::uint64_t number = 0;
  const std::string_view text(value);
  std::from_chars(text.data(), text.data() + text.size(), number, 16);
  return number;
}

absl::Status check_options(const ImportOptions& options) {
  std::vector<std::string> problems;
  if (options.stream.empty()) problems.emplace_back("stream is empty");
  if (options.durable.empty()) {
    problems.emplace_back(
        "durable is empty (name the function group, e.g. \"fulfilment\")");
  }
  if (options.fetch_batch < 1 || options.fetch_batch > 10000) {
    problems.push_back(
        fmt::format("fetch_batch is {} (1 .. 10000)", options.fetch_batch));
  }
  if (options.fetch_wait <= std::chrono::milliseconds(0)) {
    problems.emplace_back("fetch_wait must be > 0");
  }
  if (options.ack_wait < std::chrono::seconds(1)) {
    problems.emplace_back("ack_wait must be >= 1 s");
  }
  if (options.max_ack_pending < 1) {
    problems.emplace_back("max_ack_pending must be >= 1");
  }
  if (options.redelivery_backoff.empty() ||
      std::any_of(options.redelivery_backoff.begin(),
                  options.redelivery_backoff.end(),
                  [](auto d) { return d < std::chrono::milliseconds(0); })) {
    problems.emplace_back(
        "redelivery_backoff must hold at least one delay, none negative");
  }
  if (!options.dead_letter) {
    problems.emplace_back(
        "dead_letter is not set (give it e.g. a DeadLetterStore's sink(): "
        "undecodable messages go there)");
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "fnbus::nats::ImportOptions: ", absl::StrJoin(problems, "; ")));
}

// One subject's counters. relaxed: independent statistics.
struct SubjectCounters {
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> redelivered{0};
  std::atomic<std::uint64_t> imported{0};
  std::atomic<std::uint64_t> acked{0};
  std::atomic<std::uint64_t> nacked{0};
  std::atomic<std::uint64_t> decode_failures{0};
};

void bump(std::atomic<std::uint64_t>& counter) {
  counter.fetch_add(1, std::memory_order_relaxed);
}

struct Route {
  std::string subject;
  std::function<absl::StatusOr<OwnedEvent>(std::string_view)> decode;
  PublishOptions publish;
  SubjectCounters counters;
};

// What JetStream says about a message: its stream sequence and how many
// times it was delivered (1: the first time).
struct Delivery {
  std::uint64_t stream_sequence = 0;
  std::uint64_t delivered = 1;
};

Delivery delivery_of(natsMsg* msg) {
  jsMsgMetaData* meta = nullptr;
  if (natsMsg_GetMetaData(&meta, msg) != NATS_OK || meta == nullptr) return {};
  Delivery delivery{.stream_sequence = meta->Sequence.Stream,
                    .delivered = meta->NumDelivered};
  jsMsgMetaData_Destroy(meta);
  return delivery;
}

}  // namespace

struct Importer::State : std::enable_shared_from_this<Importer::State> {
  State(EventBus& bus_, Connection& connection_, ImportOptions options_)
      : bus(bus_), connection(connection_), options(std::move(options_)) {}
  ~State() {
    if (subscription != nullptr) natsSubscription_Destroy(subscription);
  }

  EventBus& bus;
  Connection& connection;
  const ImportOptions options;
  std::vector<std::unique_ptr<Route>> routes;  // fixed once started
  // Messages on subjects without a route, counted under their subject.
  mutable std::mutex unrouted_mutex;
  std::map<std::string, std::unique_ptr<SubjectCounters>, std::less<>> unrouted;

  natsSubscription* subscription = nullptr;
  std::thread fetcher;
  // Set by stop(); read by the fetching thread between pulls. relaxed: it
  // only ends the loop, and the thread is joined after.
  std::atomic<bool> stopping{false};
  bool started = false;  // start()/add()/stop() thread only
  std::atomic<std::uint64_t> fetch_errors{0};  // relaxed: a statistic

  // Events published and not yet settled; stop() waits for 0.
  mutable std::mutex flight_mutex;
  std::condition_variable flight_cv;
  std::uint64_t in_flight = 0;

  Route* route_for(std::string_view subject) const {
    for (const auto& route : routes) {
      if (route->subject == subject) return route.get();
    }
    return nullptr;
  }
  SubjectCounters& unrouted_counters(std::string_view subject) {
    std::lock_guard lock(unrouted_mutex);
    auto it = unrouted.find(subject);
    if (it == unrouted.end()) {
      it = unrouted
               .emplace(std::string(subject),
                        std::make_unique<SubjectCounters>())
               .first;
    }
    return *it->second;
  }

  // Sends `msg` back after the backoff of its delivery count.
  void nak_later(natsMsg* msg, std::uint64_t delivered) const {
    const std::size_t last = options.redelivery_backoff.size() - 1;
    const std::chrono::milliseconds delay =
        options.redelivery_backoff[std::min<std::uint64_t>(
            delivered > 0 ? delivered - 1 : 0, last)];
    natsMsg_NakWithDelay(msg, delay.count(), nullptr);
  }

  void fetch_loop();
  void receive(natsMsg* msg);
  void undecodable(natsMsg* msg, SubjectCounters& counters,
                   const Delivery& delivery, const absl::Status& why);
  void settle(natsMsg* msg, Route& route, const Delivery& delivery,
              const Settlement& settlement);
  void left_flight() {
    std::lock_guard lock(flight_mutex);
    --in_flight;
    if (in_flight == 0) flight_cv.notify_all();
  }
};

void Importer::State::fetch_loop() {
  const auto wait_ms = static_cast<std::int64_t>(options.fetch_wait.count());
  while (!stopping.load(std::memory_order_relaxed)) {
    natsMsgList list{};
    jsErrCode error = static_cast<jsErrCode>(0);
    const natsStatus status = natsSubscription_Fetch(
        &list, subscription, options.fetch_batch, wait_ms, &error);
    if (status == NATS_TIMEOUT) continue;  // nothing to fetch
    if (status != NATS_OK) {
      // Disconnected, or the consumer is gone: the client reconnects by
      // itself; wait a pull's time before the next try.
      bump(fetch_errors);
      std::unique_lock lock(flight_mutex);
      flight_cv.wait_for(lock, options.fetch_wait, [this] {
        return stopping.load(std::memory_order_relaxed);
      });
      continue;
    }
    for (int i = 0; i < list.Count; ++i) {
      natsMsg* msg = std::exchange(list.Msgs[i], nullptr);  // ours now
      receive(msg);
    }
    natsMsgList_Destroy(&list);
  }
}

void Importer::State::receive(natsMsg* msg) {
  const std::string_view subject(natsMsg_GetSubject(msg));
  const Delivery delivery = delivery_of(msg);
  Route* route = route_for(subject);
  SubjectCounters& counters =
      route != nullptr ? route->counters : unrouted_counters(subject);
  bump(counters.received);
  if (delivery.delivered > 1) bump(counters.redelivered);
  if (route == nullptr) {
    return undecodable(
        msg, counters, delivery,
        absl::NotFoundError(fmt::format(
            "no ImportRoute for subject \"{}\"; add one to the importer of "
            "durable \"{}\", or narrow ImportOptions::filter_subject",
            subject, options.durable)));
  }
  const std::string_view bytes(
      natsMsg_GetData(msg),
      static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
  absl::StatusOr<OwnedEvent> event;
  try {
    event = route->decode(bytes);
  } catch (const std::exception& error) {
    event = absl::InvalidArgumentError(
        fmt::format("the codec threw: {}", error.what()));
  }
  if (!event.ok()) return undecodable(msg, counters, delivery, event.status());

  PublishOptions publish = route->publish;
  if (!publish.overflow) publish.overflow = OverflowPolicy::kBlock;
  if (const std::uint64_t correlation = header_number(msg, kCorrelationHeader);
      correlation != 0) {
    publish.trace =
        TraceContext{.correlation_id = correlation,
                     .parent_id = header_number(msg, kEventIdHeader)};
  }
  publish.on_settled = [self = shared_from_this(), msg, route,
                        delivery](const Settlement& settlement) {
    self->settle(msg, *route, delivery, settlement);
  };
  {
    std::lock_guard lock(flight_mutex);
    ++in_flight;
  }
  if (absl::Status published = bus.publish(*std::move(event), publish);
      !published.ok()) {
    // Refused (the bus is shutting down, or stayed full): another
    // delivery, here or elsewhere, will have it.
    bump(route->counters.nacked);
    nak_later(msg, delivery.delivered);
    natsMsg_Destroy(msg);
    left_flight();
    return;
  }
  bump(route->counters.imported);
}

void Importer::State::undecodable(natsMsg* msg, SubjectCounters& counters,
                                  const Delivery& delivery,
                                  const absl::Status& why) {
  bump(counters.decode_failures);
  const OwnedEvent letter = OwnedEvent::Of(UndecodableMessage{
      .subject = natsMsg_GetSubject(msg),
      .data = std::string(natsMsg_GetData(msg),
                          static_cast<std::size_t>(natsMsg_GetDataLength(msg))),
      .stream_sequence = delivery.stream_sequence});
  try {
    options.dead_letter(
        DeadLetter{.event = letter.ref(),
                   .reason = DeadLetterReason::kUndecodable,
                   .trace = {},
                   .function = options.durable,
                   .attempts = static_cast<std::uint32_t>(delivery.delivered),
                   .last_error = why});
  } catch (...) {  // the sink's own failure: the message stays in the stream
    natsMsg_Nak(msg, nullptr);
    natsMsg_Destroy(msg);
    return;
  }
  // Kept in the dead letters: JetStream must not send it again.
  natsMsg_Term(msg, nullptr);
  natsMsg_Destroy(msg);
}

void Importer::State::settle(natsMsg* msg, Route& route,
                             const Delivery& delivery,
                             const Settlement& settlement) {
  switch (settlement.verdict) {
    case Verdict::kDone:
    case Verdict::kDeadLettered:  // kept by the local dead-letter sink
      natsMsg_Ack(msg, nullptr);
      bump(route.counters.acked);
      break;
    case Verdict::kAbandoned:  // not done here: anyone may take it now
      natsMsg_Nak(msg, nullptr);
      bump(route.counters.nacked);
      break;
    case Verdict::kFailed:
    case Verdict::kUnhandled:
      nak_later(msg, delivery.delivered);
      bump(route.counters.nacked);
      break;
  }
  natsMsg_Destroy(msg);
  left_flight();
}

absl::StatusOr<std::unique_ptr<Importer>> Importer::Create(
    EventBus& bus, Connection& connection, ImportOptions options) {
  if (absl::Status status = check_options(options); !status.ok()) {
    return status;
  }
  return std::unique_ptr<Importer>(new Importer(
      std::make_shared<State>(bus, connection, std::move(options))));
}

Importer::~Importer() { (void)stop(std::chrono::seconds(5)); }

absl::Status Importer::add_route(std::string subject, Decoder decode,
                                 PublishOptions publish, bool has_decode) {
  if (state_->started) {
    return absl::FailedPreconditionError(
        "Importer::add() after start(); add every route first");
  }
  if (subject.empty() || !has_decode) {
    return absl::InvalidArgumentError(
        "ImportRoute needs a subject and a codec with decode()");
  }
  if (state_->route_for(subject) != nullptr) {
    return absl::InvalidArgumentError(
        fmt::format("subject \"{}\" is routed twice; give each subject one "
                    "event type",
                    subject));
  }
  if (publish.on_settled) {
    return absl::InvalidArgumentError(
        "ImportRoute::publish.on_settled is the importer's own; leave it "
        "empty");
  }
  auto route = std::make_unique<Route>();
  route->subject = std::move(subject);
  route->decode = std::move(decode);
  route->publish = std::move(publish);
  state_->routes.push_back(std::move(route));
  return absl::OkStatus();
}

absl::Status Importer::start() {
  State& state = *state_;
  if (state.started) {
    return absl::FailedPreconditionError("Importer::start() called twice");
  }
  if (state.routes.empty()) {
    return absl::FailedPreconditionError(
        "Importer::start() without routes; add() one per event type first");
  }
  if (absl::Status stream = state.connection.check_stream(state.options.stream);
      !stream.ok()) {
    return stream;
  }
  jsCtx* js = state.connection.handles().jetstream;
  const ImportOptions& options = state.options;
  jsConsumerConfig config;
  jsConsumerConfig_Init(&config);
  config.Durable = options.durable.c_str();
  config.AckPolicy = js_AckExplicit;
  config.AckWait = nanoseconds(options.ack_wait);
  config.MaxAckPending = options.max_ack_pending;
  config.FilterSubject =
      options.filter_subject.empty() ? nullptr : options.filter_subject.c_str();
  jsConsumerInfo* info = nullptr;
  jsErrCode error = static_cast<jsErrCode>(0);
  natsStatus status = js_AddConsumer(&info, js, options.stream.c_str(), &config,
                                     nullptr, &error);
  if (status != NATS_OK) {
    // It exists with other settings: take it with these.
    status = js_UpdateConsumer(&info, js, options.stream.c_str(), &config,
                               nullptr, &error);
  }
  if (info != nullptr) jsConsumerInfo_Destroy(info);
  if (status != NATS_OK) {
    return to_status(status, fmt::format("creating durable consumer \"{}\" on "
                                         "stream \"{}\"",
                                         options.durable, options.stream));
  }
  // Bound, not created by the subscription: stopping never deletes the
  // durable consumer (nor its place in the stream).
  jsSubOptions bind;
  jsSubOptions_Init(&bind);
  bind.Stream = options.stream.c_str();
  bind.Consumer = options.durable.c_str();
  status = js_PullSubscribe(&state.subscription, js, config.FilterSubject,
                            options.durable.c_str(), nullptr, &bind, &error);
  if (status != NATS_OK) {
    state.subscription = nullptr;
    return to_status(status, fmt::format("binding to durable consumer \"{}\"",
                                         options.durable));
  }
  state.started = true;
  state.fetcher = std::thread([self = state_] { self->fetch_loop(); });
  return absl::OkStatus();
}

absl::Status Importer::stop(std::chrono::milliseconds timeout) {
  State& state = *state_;
  if (!state.fetcher.joinable()) return absl::OkStatus();
  state.stopping.store(true, std::memory_order_relaxed);
  state.flight_cv.notify_all();  // a fetch error's wait
  state.fetcher.join();
  std::unique_lock lock(state.flight_mutex);
  if (!state.flight_cv.wait_for(lock, timeout,
                                [&] { return state.in_flight == 0; })) {
    return absl::DeadlineExceededError(fmt::format(
        "Importer::stop(): {} events still unsettled; JetStream sends them "
        "again after ack_wait",
        state.in_flight));
  }
  return absl::OkStatus();
}

namespace {

ImportSubjectStats read(std::string_view subject,
                        const SubjectCounters& counters) {
  auto load = [](const std::atomic<std::uint64_t>& c) {
    return c.load(std::memory_order_relaxed);
  };
  return {.subject = std::string(subject),
          .received = load(counters.received),
          .redelivered = load(counters.redelivered),
          .imported = load(counters.imported),
          .acked = load(counters.acked),
          .nacked = load(counters.nacked),
          .decode_failures = load(counters.decode_failures)};
}

}  // namespace

ImporterStats Importer::stats() const {
  const State& state = *state_;
  ImporterStats stats;
  for (const auto& route : state.routes) {
    stats.subjects.push_back(read(route->subject, route->counters));
  }
  {
    std::lock_guard lock(state.unrouted_mutex);
    for (const auto& [subject, counters] : state.unrouted) {
      stats.subjects.push_back(read(subject, *counters));
    }
  }
  stats.fetch_errors = state.fetch_errors.load(std::memory_order_relaxed);
  std::lock_guard lock(state.flight_mutex);
  stats.in_flight = state.in_flight;
  return stats;
}

void Importer::append_prometheus(std::string& out) const {
  const ImporterStats now = stats();
  const std::string& durable = state_->options.durable;
  auto family = [&](std::string_view name, std::string_view help,
                    std::uint64_t ImportSubjectStats::*field) {
    out += fmt::format("# HELP fnbus_nats_import_{}_total {}\n", name, help);
    out += fmt::format("# TYPE fnbus_nats_import_{}_total counter\n", name);
    for (const ImportSubjectStats& subject : now.subjects) {
      out += fmt::format(
          "fnbus_nats_import_{}_total{{durable=\"{}\",subject=\"{}\"}} {}\n",
          name, durable, subject.subject, subject.*field);
    }
  };
  family("received", "Messages fetched from JetStream.",
         &ImportSubjectStats::received);
  family("redelivered", "Fetched messages JetStream had sent before.",
         &ImportSubjectStats::redelivered);
  family("imported", "Messages published to the local bus.",
         &ImportSubjectStats::imported);
  family("acked", "Messages acknowledged once their event settled.",
         &ImportSubjectStats::acked);
  family("nacked", "Messages negatively acknowledged for redelivery.",
         &ImportSubjectStats::nacked);
  family("decode_failures", "Messages dead-lettered as undecodable.",
         &ImportSubjectStats::decode_failures);
}

}  // namespace fnbus::nats
