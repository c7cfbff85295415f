#include "fnbus/metrics/exposition.hpp"

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

namespace fnbus::metrics {
namespace {

// ---------------------------------------------------------------------------
// Strings: UTF-8 checking and escaping.

constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";  // U+FFFD

// The length of the well-formed UTF-8 sequence starting at s[i] (Unicode
// table 3-7: no overlong forms, no surrogates, nothing above U+10FFFF), or
// 0 if the bytes there are not one.
std::size_t utf8_sequence_length(std::string_view s, std::size_t i) noexcept {
  const auto byte = [&](std::size_t k) {
    return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u;
  };
  const unsigned lead = byte(0);
  const auto continuation = [&](std::size_t k, unsigned low = 0x80,
                                unsigned high = 0xBF) {
    return byte(k) >= low && byte(k) <= high;
  };
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return continuation(1) ? 2 : 0;
  if (lead >= 0xE0 && lead <= 0xEF) {
    const unsigned low = lead == 0xE0 ? 0xA0 : 0x80;
    const unsigned high = lead == 0xED ? 0x9F : 0xBF;
    return continuation(1, low, high) && continuation(2) ? 3 : 0;
  }
  if (lead >= 0xF0 && lead <= 0xF4) {
    const unsigned low = lead == 0xF0 ? 0x90 : 0x80;
    const unsigned high = lead == 0xF4 ? 0x8F : 0xBF;
    return continuation(1, low, high) && continuation(2) && continuation(3) ? 4
                                                                            : 0;
  }
  return 0;
}

// Appends `s` to `out`, passing each ASCII character through `ascii(out,
// c)`, copying valid multi-byte sequences, and replacing each byte that
// starts no valid sequence with U+FFFD.
template <typename Ascii>
void append_escaped(std::string& out, std::string_view s, Ascii ascii) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t length = utf8_sequence_length(s, i);
    if (length == 0) {
      out += kReplacementCharacter;
      ++i;
    } else if (length == 1) {
      ascii(out, s[i]);
      ++i;
    } else {
      out.append(s, i, length);
      i += length;
    }
  }
}

// A Prometheus label value (text format 0.0.4): `\`, `"` and newline are
// escaped; everything else is taken as is.
void append_label_value(std::string& out, std::string_view s) {
  append_escaped(out, s, [](std::string& o, char c) {
    switch (c) {
      case '\\':
        o += "\\\\";
        break;
      case '"':
        o += "\\\"";
        break;
      case '\n':
        o += "\\n";
        break;
      default:
        o += c;
    }
  });
}

// A JSON string, quotes included: `"` and `\` escaped, control characters
// as \u00XX.
void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  append_escaped(out, s, [](std::string& o, char c) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      fmt::format_to(std::back_inserter(o), "\\u{:04x}",
                     static_cast<unsigned>(c));
    } else {
      o += c;
    }
  });
  out += '"';
}

// ---------------------------------------------------------------------------
// Prometheus text format.

template <typename Entry>
struct CounterFamily {
  std::string_view name;
  std::string_view help;
  std::uint64_t Entry::*field;
};

template <typename Entry>
struct HistogramFamily {
  std::string_view name;
  std::string_view help;
  HistogramSnapshot Entry::*field;
};

struct GaugeFamily {
  std::string_view name;
  std::string_view help;
  std::uint64_t Gauges::*field;
};

constexpr CounterFamily<EventTypeMetrics> kEventCounters[] = {
    {"fnbus_events_published_total", "Events accepted by publish().",
     &EventTypeMetrics::published},
    {"fnbus_events_rejected_total", "Events refused by publish().",
     &EventTypeMetrics::rejected},
    {"fnbus_events_dispatched_total",
     "Events taken off the queue and handed to their functions.",
     &EventTypeMetrics::dispatched},
    {"fnbus_events_unhandled_total", "Events dispatched with no subscriber.",
     &EventTypeMetrics::unhandled},
    {"fnbus_events_dead_lettered_total",
     "Accepted events given to the dead-letter sink.",
     &EventTypeMetrics::dead_lettered},
};

constexpr CounterFamily<FunctionMetrics> kFunctionCounters[] = {
    {"fnbus_function_delivered_total", "Function calls that returned normally.",
     &FunctionMetrics::delivered},
    {"fnbus_function_failed_total",
     "Function calls that threw or returned a non-OK status.",
     &FunctionMetrics::failed},
    {"fnbus_function_filtered_total",
     "Events the function's trigger condition turned down.",
     &FunctionMetrics::filtered},
    {"fnbus_function_duplicates_total",
     "Events not run again: their idempotency key was seen before.",
     &FunctionMetrics::duplicates},
    {"fnbus_function_rejected_total",
     "Events not run while the circuit breaker was open (no fallback; "
     "dead-lettered).",
     &FunctionMetrics::rejected},
    {"fnbus_function_fell_back_total",
     "Events handled by the function's fallback.", &FunctionMetrics::fell_back},
    {"fnbus_function_timed_out_total",
     "Function calls that returned or threw after their deadline (counted "
     "as failed too).",
     &FunctionMetrics::timed_out},
    {"fnbus_function_late_total",
     "Function calls that succeeded after their deadline (counted as timed "
     "out).",
     &FunctionMetrics::late},
    {"fnbus_function_retried_total",
     "Failed function calls followed by a retry (counted as failed too).",
     &FunctionMetrics::retried},
    {"fnbus_function_dead_lettered_total",
     "Events the function gave up to the dead-letter sink (rejected ones "
     "included).",
     &FunctionMetrics::dead_lettered},
    {"fnbus_function_throttled_total",
     "Events that waited for a call of the function to end (its "
     "concurrency limit was reached).",
     &FunctionMetrics::throttled},
};

// Written for the functions with breaker metrics alone
// (FunctionMetrics::has_breaker_metrics()).
constexpr CounterFamily<FunctionMetrics> kBreakerCounters[] = {
    {"fnbus_function_breaker_opened_total",
     "Transitions of the function's circuit breakers to open (tripped, or a "
     "probe failed).",
     &FunctionMetrics::breaker_opened},
    {"fnbus_function_breaker_half_opened_total",
     "Transitions of the function's circuit breakers to half-open (cool-down "
     "over, probing).",
     &FunctionMetrics::breaker_half_opened},
    {"fnbus_function_breaker_closed_total",
     "Transitions of the function's circuit breakers to closed (every probe "
     "succeeded).",
     &FunctionMetrics::breaker_closed},
};

// The value of fnbus_function_breaker_state.
int breaker_state_value(resilience::BreakerState state) noexcept {
  switch (state) {
    case resilience::BreakerState::kClosed:
      return 0;
    case resilience::BreakerState::kHalfOpen:
      return 1;
    case resilience::BreakerState::kOpen:
      return 2;
  }
  return 0;
}

constexpr HistogramFamily<EventTypeMetrics> kEventHistograms[] = {
    {"fnbus_queue_wait_seconds",
     "Time from publish() accepting an event to a worker taking it.",
     &EventTypeMetrics::queue_wait},
    {"fnbus_end_to_end_seconds",
     "Time from publish() accepting an event to its last function returning.",
     &EventTypeMetrics::end_to_end},
};

constexpr HistogramFamily<FunctionMetrics> kFunctionHistograms[] = {
    {"fnbus_handler_run_seconds", "Time of one function call.",
     &FunctionMetrics::run_time},
};

constexpr GaugeFamily kGauges[] = {
    {"fnbus_queue_depth", "Events waiting in the queue.", &Gauges::queue_depth},
    {"fnbus_queue_capacity", "Slots in the queue.", &Gauges::queue_capacity},
    {"fnbus_in_flight", "Events being handled now.", &Gauges::in_flight},
    {"fnbus_workers", "Worker threads in the pool.", &Gauges::workers},
    {"fnbus_workers_busy", "Workers handling an event.", &Gauges::workers_busy},
    {"fnbus_workers_idle", "Workers awake without an event (polling for work).",
     &Gauges::workers_idle},
    {"fnbus_workers_parked", "Workers asleep until work arrives.",
     &Gauges::workers_parked},
    {"fnbus_workers_starting", "Workers started and not yet running.",
     &Gauges::workers_starting},
    {"fnbus_workers_retiring",
     "Workers asked to leave that are finishing an event.",
     &Gauges::workers_retiring},
    {"fnbus_workers_max", "The most workers the pool may grow to.",
     &Gauges::workers_max},
};

// The timers' metrics: one unlabelled sample each.
struct TimerFamily {
  std::string_view name;
  std::string_view help;
  std::string_view type;  // "gauge" or "counter"
  std::uint64_t TimerMetrics::*field;
};

constexpr TimerFamily kTimerFamilies[] = {
    {"fnbus_timers_pending", "Timers scheduled and not yet ended.", "gauge",
     &TimerMetrics::pending},
    {"fnbus_timers_scheduled_total", "Timers created.", "counter",
     &TimerMetrics::scheduled},
    {"fnbus_timers_fired_total", "Events published by timers.", "counter",
     &TimerMetrics::fired},
    {"fnbus_timers_cancelled_total", "Timers cancelled before they fired.",
     "counter", &TimerMetrics::cancelled},
    {"fnbus_timers_dead_lettered_total",
     "Timer events given to the dead-letter sink (pending at shutdown, or "
     "refused when published).",
     "counter", &TimerMetrics::dead_lettered},
    {"fnbus_timers_stopped_total", "Periodic timers ended by shutdown.",
     "counter", &TimerMetrics::stopped},
};

void append_header(std::string& out, std::string_view name,
                   std::string_view help, std::string_view type) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name,
                 help, name, type);
}

// The label set of each entry, without braces: `event="..."` or
// `event="...",function="..."`.
std::vector<std::string> label_sets(
    const std::vector<EventTypeMetrics>& events) {
  std::vector<std::string> labels;
  labels.reserve(events.size());
  for (const EventTypeMetrics& e : events) {
    std::string& l = labels.emplace_back("event=\"");
    append_label_value(l, e.event);
    l += '"';
  }
  return labels;
}

std::vector<std::string> label_sets(
    const std::vector<FunctionMetrics>& functions) {
  std::vector<std::string> labels;
  labels.reserve(functions.size());
  for (const FunctionMetrics& f : functions) {
    std::string& l = labels.emplace_back("event=\"");
    append_label_value(l, f.event);
    l += "\",function=\"";
    append_label_value(l, f.function);
    l += '"';
  }
  return labels;
}

template <typename Entry>
void append_counter(std::string& out, const CounterFamily<Entry>& family,
                    const std::vector<Entry>& entries,
                    const std::vector<std::string>& labels) {
  if (entries.empty()) return;
  append_header(out, family.name, family.help, "counter");
  for (std::size_t i = 0; i < entries.size(); ++i) {
    fmt::format_to(std::back_inserter(out), "{}{{{}}} {}\n", family.name,
                   labels[i], entries[i].*family.field);
  }
}

// The breaker families, for the functions that have breaker metrics: the
// state gauge (functions with a live breaker), the live breakers by state,
// and the transition counters. None when no function has a breaker.
// A function's dead letters by reason: the reasons it has had only (the
// total is fnbus_function_dead_lettered_total).
void append_function_dead_letters(std::string& out,
                                  const std::vector<FunctionMetrics>& functions,
                                  const std::vector<std::string>& labels) {
  constexpr std::string_view kName = "fnbus_function_dead_letters_total";
  bool header = false;
  for (std::size_t i = 0; i < functions.size(); ++i) {
    const DeadLetterCounts& counts = functions[i].dead_letter_reasons;
    for (std::size_t r = 0; r < counts.by_reason.size(); ++r) {
      if (counts.by_reason[r] == 0) continue;
      if (!header) {
        append_header(out, kName,
                      "Events the function gave up to the dead-letter "
                      "sink, by reason.",
                      "counter");
        header = true;
      }
      fmt::format_to(std::back_inserter(out), "{}{{{},reason=\"{}\"}} {}\n",
                     kName, labels[i],
                     to_string(static_cast<DeadLetterReason>(r)),
                     counts.by_reason[r]);
    }
  }
}

void append_breakers(std::string& out,
                     const std::vector<FunctionMetrics>& functions,
                     const std::vector<std::string>& labels) {
  std::vector<std::size_t> with_metrics;
  std::vector<std::size_t> live;
  for (std::size_t i = 0; i < functions.size(); ++i) {
    if (!functions[i].has_breaker_metrics()) continue;
    with_metrics.push_back(i);
    if (functions[i].breaker_state().has_value()) live.push_back(i);
  }
  auto it = std::back_inserter(out);
  if (!live.empty()) {
    append_header(out, "fnbus_function_breaker_state",
                  "The most open state of the function's live circuit "
                  "breakers: 0 closed, 1 half-open, 2 open.",
                  "gauge");
    for (std::size_t i : live) {
      fmt::format_to(it, "fnbus_function_breaker_state{{{}}} {}\n", labels[i],
                     breaker_state_value(*functions[i].breaker_state()));
    }
  }
  if (with_metrics.empty()) return;
  append_header(out, "fnbus_function_breakers",
                "The function's live circuit breakers in each state.", "gauge");
  for (std::size_t i : with_metrics) {
    const BreakerCounts& b = functions[i].breakers;
    fmt::format_to(it,
                   "fnbus_function_breakers{{{0},state=\"closed\"}} {1}\n"
                   "fnbus_function_breakers{{{0},state=\"half_open\"}} {2}\n"
                   "fnbus_function_breakers{{{0},state=\"open\"}} {3}\n",
                   labels[i], b.closed, b.half_open, b.open);
  }
  for (const auto& family : kBreakerCounters) {
    append_header(out, family.name, family.help, "counter");
    for (std::size_t i : with_metrics) {
      fmt::format_to(it, "{}{{{}}} {}\n", family.name, labels[i],
                     functions[i].*family.field);
    }
  }
}

// Nanoseconds as seconds, shortest round-trip form ("2.5e-06", "0.25", "60").
std::string seconds_text(std::uint64_t nanos) {
  return fmt::format("{}", static_cast<double>(nanos) / 1e9);
}

void append_histogram_series(std::string& out, std::string_view name,
                             const std::string& labels,
                             const std::vector<std::string>& le_texts,
                             const HistogramSnapshot& h) {
  auto it = std::back_inserter(out);
  for (std::size_t b = 0; b < kPrometheusBucketBoundsNanos.size(); ++b) {
    fmt::format_to(it, "{}_bucket{{{},le=\"{}\"}} {}\n", name, labels,
                   le_texts[b],
                   h.count_at_or_below(kPrometheusBucketBoundsNanos[b]));
  }
  fmt::format_to(it, "{}_bucket{{{},le=\"+Inf\"}} {}\n", name, labels,
                 h.count());
  fmt::format_to(it, "{}_sum{{{}}} {}\n", name, labels,
                 static_cast<double>(h.sum_nanos()) / 1e9);
  fmt::format_to(it, "{}_count{{{}}} {}\n", name, labels, h.count());
}

template <typename Entry>
void append_histogram(std::string& out, const HistogramFamily<Entry>& family,
                      const std::vector<Entry>& entries,
                      const std::vector<std::string>& labels,
                      const std::vector<std::string>& le_texts) {
  if (entries.empty()) return;
  append_header(out, family.name, family.help, "histogram");
  for (std::size_t i = 0; i < entries.size(); ++i) {
    append_histogram_series(out, family.name, labels[i], le_texts,
                            entries[i].*family.field);
  }
}

// ---------------------------------------------------------------------------
// JSON.

void append_json_latency(std::string& out, std::string_view key,
                         const HistogramSnapshot& h) {
  fmt::format_to(std::back_inserter(out),
                 ",\"{}\":{{\"count\":{},\"sum_ns\":{},\"max_ns\":{},"
                 "\"p50_ns\":{},\"p90_ns\":{},\"p99_ns\":{},\"p999_ns\":{}}}",
                 key, h.count(), h.sum_nanos(), h.max_nanos(),
                 h.quantile_nanos(0.5), h.quantile_nanos(0.9),
                 h.quantile_nanos(0.99), h.quantile_nanos(0.999));
}

void append_json_event(std::string& out, const EventTypeMetrics& e,
                       bool latency) {
  out += "{\"event\":";
  append_json_string(out, e.event);
  fmt::format_to(std::back_inserter(out),
                 ",\"published\":{},\"rejected\":{},\"dispatched\":{},"
                 "\"unhandled\":{},\"dead_lettered\":{}",
                 e.published, e.rejected, e.dispatched, e.unhandled,
                 e.dead_lettered);
  if (latency) {
    append_json_latency(out, "queue_wait", e.queue_wait);
    append_json_latency(out, "end_to_end", e.end_to_end);
  }
  out += '}';
}

// A DeadLetterCounts as {"<reason>": count, ...}.
void append_json_dead_letters(std::string& out, const DeadLetterCounts& counts,
                              bool nonzero_only) {
  out += '{';
  bool first = true;
  for (std::size_t i = 0; i < counts.by_reason.size(); ++i) {
    if (nonzero_only && counts.by_reason[i] == 0) continue;
    if (!first) out += ',';
    first = false;
    fmt::format_to(std::back_inserter(out), "\"{}\":{}",
                   to_string(static_cast<DeadLetterReason>(i)),
                   counts.by_reason[i]);
  }
  out += '}';
}

void append_json_function(std::string& out, const FunctionMetrics& f,
                          bool latency) {
  out += "{\"event\":";
  append_json_string(out, f.event);
  out += ",\"function\":";
  append_json_string(out, f.function);
  fmt::format_to(std::back_inserter(out),
                 ",\"delivered\":{},\"failed\":{},\"filtered\":{},"
                 "\"duplicates\":{},\"rejected\":{},\"fell_back\":{},"
                 "\"timed_out\":{},\"late\":{},\"retried\":{},"
                 "\"dead_lettered\":{},\"throttled\":{}",
                 f.delivered, f.failed, f.filtered, f.duplicates, f.rejected,
                 f.fell_back, f.timed_out, f.late, f.retried, f.dead_lettered,
                 f.throttled);
  out += ",\"dead_letter_reasons\":";
  append_json_dead_letters(out, f.dead_letter_reasons, /*nonzero_only=*/true);
  if (latency) append_json_latency(out, "run_time", f.run_time);
  out += ",\"breaker_state\":";
  if (const auto state = f.breaker_state()) {
    fmt::format_to(std::back_inserter(out), "\"{}\"", to_string(*state));
  } else {
    out += "null";
  }
  fmt::format_to(std::back_inserter(out),
                 ",\"breakers\":{{\"closed\":{},\"half_open\":{},\"open\":{}}},"
                 "\"breaker_opened\":{},\"breaker_half_opened\":{},"
                 "\"breaker_closed\":{}",
                 f.breakers.closed, f.breakers.half_open, f.breakers.open,
                 f.breaker_opened, f.breaker_half_opened, f.breaker_closed);
  out += '}';
}

void append_json_gauges(std::string& out, const Gauges& g) {
  out += '{';
  for (const GaugeFamily& gauge : kGauges) {
    if (&gauge != &kGauges[0]) out += ',';
    // The JSON key is the metric name without its "fnbus_" prefix.
    fmt::format_to(std::back_inserter(out), "\"{}\":{}",
                   gauge.name.substr(std::string_view("fnbus_").size()),
                   g.*gauge.field);
  }
  out += '}';
}

void append_json_timers(std::string& out, const TimerMetrics& t) {
  out += '{';
  for (const TimerFamily& family : kTimerFamilies) {
    if (&family != &kTimerFamilies[0]) out += ',';
    // The JSON key is the metric name without "fnbus_timers_" and "_total".
    std::string_view key =
        family.name.substr(std::string_view("fnbus_timers_").size());
    if (key.ends_with("_total"))
      key.remove_suffix(std::string_view("_total").size());
    fmt::format_to(std::back_inserter(out), "\"{}\":{}", key, t.*family.field);
  }
  out += '}';
}

// Every reason, 0 included: a series that appears only once it is
// non-zero breaks rate() over its first increase.
void append_dead_letters(std::string& out, const DeadLetterCounts& counts) {
  constexpr std::string_view kName = "fnbus_dead_letters_total";
  append_header(out, kName,
                "Events given to the dead-letter sink, by reason (every "
                "dead letter of the bus: a function's, a timer's, the "
                "queue's at shutdown).",
                "counter");
  for (std::size_t i = 0; i < counts.by_reason.size(); ++i) {
    fmt::format_to(std::back_inserter(out), "{}{{reason=\"{}\"}} {}\n", kName,
                   to_string(static_cast<DeadLetterReason>(i)),
                   counts.by_reason[i]);
  }
}

}  // namespace

std::string to_prometheus_text(const MetricsSnapshot& snapshot) {
  const std::vector<std::string> event_labels = label_sets(snapshot.events);
  const std::vector<std::string> function_labels =
      label_sets(snapshot.functions);
  std::string out;
  for (const auto& family : kEventCounters) {
    append_counter(out, family, snapshot.events, event_labels);
  }
  for (const auto& family : kFunctionCounters) {
    append_counter(out, family, snapshot.functions, function_labels);
  }
  append_function_dead_letters(out, snapshot.functions, function_labels);
  append_breakers(out, snapshot.functions, function_labels);
  if (snapshot.latency_recorded) {
    std::vector<std::string> le_texts;
    for (std::uint64_t bound : kPrometheusBucketBoundsNanos) {
      le_texts.push_back(seconds_text(bound));
    }
    for (const auto& family : kEventHistograms) {
      append_histogram(out, family, snapshot.events, event_labels, le_texts);
    }
    for (const auto& family : kFunctionHistograms) {
      append_histogram(out, family, snapshot.functions, function_labels,
                       le_texts);
    }
  }
  for (const GaugeFamily& gauge : kGauges) {
    append_header(out, gauge.name, gauge.help, "gauge");
    fmt::format_to(std::back_inserter(out), "{} {}\n", gauge.name,
                   snapshot.gauges.*gauge.field);
  }
  for (const TimerFamily& family : kTimerFamilies) {
    append_header(out, family.name, family.help, family.type);
    fmt::format_to(std::back_inserter(out), "{} {}\n", family.name,
                   snapshot.timers.*family.field);
  }
  append_dead_letters(out, snapshot.dead_letters);
  return out;
}

std::string to_json(const MetricsSnapshot& snapshot) {
  const bool latency = snapshot.latency_recorded;
  std::string out;
  fmt::format_to(std::back_inserter(out),
                 "{{\"taken_at_ns\":{},\"latency_recorded\":{},\"events\":[",
                 snapshot.taken_at.time_since_epoch().count(), latency);
  for (std::size_t i = 0; i < snapshot.events.size(); ++i) {
    if (i > 0) out += ',';
    append_json_event(out, snapshot.events[i], latency);
  }
  out += "],\"functions\":[";
  for (std::size_t i = 0; i < snapshot.functions.size(); ++i) {
    if (i > 0) out += ',';
    append_json_function(out, snapshot.functions[i], latency);
  }
  out += "],\"gauges\":";
  append_json_gauges(out, snapshot.gauges);
  out += ",\"timers\":";
  append_json_timers(out, snapshot.timers);
  out += ",\"dead_letters\":";
  append_json_dead_letters(out, snapshot.dead_letters, /*nonzero_only=*/false);
  out += '}';
  return out;
}

}  // namespace fnbus::metrics
