// Tests of fnbus::metrics exposition: the Prometheus text (escaping,
// families, cumulative buckets, +Inf == _count, histograms only when
// latency is recorded) and the JSON (well-formed, escaped, documented keys).
// promtool and python3 check the same output as ctests metrics.promtool and
// metrics.json (tests/CMakeLists.txt).

#include "fnbus/metrics/exposition.hpp"

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "sample_snapshot.hpp"
#include <catch2/catch.hpp>

using fnbus::metrics::EventTypeMetrics;
using fnbus::metrics::FunctionMetrics;
using fnbus::metrics::HistogramSnapshot;
using fnbus::metrics::kPrometheusBucketBoundsNanos;
using fnbus::metrics::MetricsSnapshot;
using fnbus::metrics::to_json;
using fnbus::metrics::to_prometheus_text;
using fnbus::testing_support::sample_snapshot;

namespace {

// ---------------------------------------------------------------------------
// A reader for the Prometheus text format, as far as these tests need it.

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;  // unescaped values
  std::string value;
};

// Parses `name{k="v",...} value`; nullopt if the line is malformed.
std::optional<Sample> parse_sample(std::string_view line) {
  Sample sample;
  std::size_t i = 0;
  while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
  sample.name = std::string(line.substr(0, i));
  if (i < line.size() && line[i] == '{') {
    ++i;
    while (i < line.size() && line[i] != '}') {
      const std::size_t eq = line.find('=', i);
      if (eq == std::string_view::npos || eq + 1 >= line.size() ||
          line[eq + 1] != '"') {
        return std::nullopt;
      }
      const std::string key(line.substr(i, eq - i));
      std::string value;
      for (i = eq + 2; i < line.size() && line[i] != '"'; ++i) {
        if (line[i] == '\n') return std::nullopt;
        if (line[i] != '\\') {
          value += line[i];
          continue;
        }
        if (++i >= line.size()) return std::nullopt;
        switch (line[i]) {
          case '\\':
            value += '\\';
            break;
          case '"':
            value += '"';
            break;
          case 'n':
            value += '\n';
            break;
          default:
            return std::nullopt;
        }
      }
      if (i >= line.size()) return std::nullopt;
      ++i;  // closing quote
      if (!sample.labels.emplace(key, value).second) return std::nullopt;
      if (i < line.size() && line[i] == ',') ++i;
    }
    if (i >= line.size()) return std::nullopt;
    ++i;  // '}'
  }
  if (i >= line.size() || line[i] != ' ') return std::nullopt;
  sample.value = std::string(line.substr(i + 1));
  if (sample.value.empty()) return std::nullopt;
  return sample;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<Sample> samples_of(const std::string& text) {
  std::vector<Sample> samples;
  for (const std::string& line : lines_of(text)) {
    if (line.empty() || line[0] == '#') continue;
    std::optional<Sample> sample = parse_sample(line);
    INFO(line);
    REQUIRE(sample.has_value());
    samples.push_back(*sample);
  }
  return samples;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.substr(s.size() - suffix.size()) == suffix;
}

// The family a sample belongs to: a histogram's _bucket/_sum/_count
// samples belong to the histogram.
std::string family_of(const std::string& name,
                      const std::map<std::string, std::string>& types) {
  for (std::string_view suffix : {"_bucket", "_sum", "_count"}) {
    if (!ends_with(name, suffix)) continue;
    std::string base = name.substr(0, name.size() - suffix.size());
    const auto it = types.find(base);
    if (it != types.end() && it->second == "histogram") return base;
  }
  return name;
}

std::uint64_t to_u64(const std::string& s) { return std::stoull(s); }

// ---------------------------------------------------------------------------
// A strict JSON checker (RFC 8259 grammar; no duplicate-key check).

class JsonChecker {
 public:
  explicit JsonChecker(std::string_view text) : s_(text) {}

  // True if the whole text is one JSON value.
  bool valid() {
    space();
    if (!value()) return false;
    space();
    return i_ == s_.size();
  }

 private:
  bool value() {
    if (i_ >= s_.size()) return false;
    switch (s_[i_]) {
      case '{':
        return object();
      case '[':
        return array();
      case '"':
        return string();
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default:
        return number();
    }
  }
  bool object() {
    ++i_;
    space();
    if (eat('}')) return true;
    do {
      space();
      if (i_ >= s_.size() || s_[i_] != '"' || !string()) return false;
      space();
      if (!eat(':')) return false;
      space();
      if (!value()) return false;
      space();
    } while (eat(','));
    return eat('}');
  }
  bool array() {
    ++i_;
    space();
    if (eat(']')) return true;
    do {
      space();
      if (!value()) return false;
      space();
    } while (eat(','));
    return eat(']');
  }
  bool string() {
    ++i_;
    while (i_ < s_.size() && s_[i_] != '"') {
      const auto c = static_cast<unsigned char>(s_[i_]);
      if (c < 0x20) return false;
      if (c == '\\') {
        if (++i_ >= s_.size()) return false;
        const char e = s_[i_];
        if (e == 'u') {
          for (int k = 0; k < 4; ++k) {
            if (++i_ >= s_.size() || !std::isxdigit(s_[i_])) return false;
          }
        } else if (std::string_view("\"\\/bfnrt").find(e) ==
                   std::string_view::npos) {
          return false;
        }
      }
      ++i_;
    }
    return eat('"');
  }
  bool number() {
    const std::size_t start = i_;
    eat('-');
    if (eat('0')) {
    } else if (!digits()) {
      return false;
    }
    if (eat('.') && !digits()) return false;
    if (eat('e') || eat('E')) {
      if (!eat('+')) eat('-');
      if (!digits()) return false;
    }
    return i_ > start;
  }
  bool digits() {
    const std::size_t start = i_;
    while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_])))
      ++i_;
    return i_ > start;
  }
  bool literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }
  bool eat(char c) {
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void space() {
    while (i_ < s_.size() &&
           std::string_view(" \t\n\r").find(s_[i_]) != std::string_view::npos) {
      ++i_;
    }
  }

  std::string_view s_;
  std::size_t i_ = 0;
};

bool valid_json(std::string_view text) { return JsonChecker(text).valid(); }

HistogramSnapshot histogram_of(std::initializer_list<std::uint64_t> values) {
  HistogramSnapshot h;
  for (std::uint64_t v : values) h.add(v);
  return h;
}

}  // namespace

TEST_CASE("exposition: the JSON checker rejects malformed text",
          "[exposition]") {
  REQUIRE(valid_json(R"({"a":[1,2.5,-3e+2,true,null],"b":{"c":"\u00e9\n"}})"));
  REQUIRE_FALSE(valid_json(R"({"a":1,})"));
  REQUIRE_FALSE(valid_json(R"({"a":[1,2})"));
  REQUIRE_FALSE(valid_json("{\"a\":\"x\ny\"}"));  // raw control character
  REQUIRE_FALSE(valid_json(R"({"a":"\x"})"));
  REQUIRE_FALSE(valid_json(R"({"a":01})"));
  REQUIRE_FALSE(valid_json(R"({"a":1} x)"));
}

TEST_CASE("exposition: label values escape backslash, quote and newline",
          "[exposition]") {
  MetricsSnapshot s;
  const std::string event = "ns::Ev<A, B> \"q\" back\\slash\nline";
  const std::string function = "say \"hi\"\\\n\ttab";
  s.events.push_back({.event = event, .published = 3});
  s.functions.push_back({.event = event, .function = function, .delivered = 2});
  const std::string text = to_prometheus_text(s);
  INFO(text);
  REQUIRE(text.find("fnbus_events_published_total{event=\"ns::Ev<A, B> "
                    "\\\"q\\\" back\\\\slash\\nline\"} 3\n") !=
          std::string::npos);
  REQUIRE(text.find("function=\"say \\\"hi\\\"\\\\\\n\ttab\"} 2\n") !=
          std::string::npos);
  // Round trip: unescaping gives the names back; no sample spans a line.
  bool found = false;
  for (const Sample& sample : samples_of(text)) {
    if (sample.name != "fnbus_function_delivered_total") continue;
    REQUIRE(sample.labels.at("event") == event);
    REQUIRE(sample.labels.at("function") == function);
    found = true;
  }
  REQUIRE(found);
}

TEST_CASE("exposition: invalid UTF-8 in names becomes U+FFFD", "[exposition]") {
  MetricsSnapshot s;
  s.events.push_back({.event = "ok \xC3\xA9 cut \xE2\x98 stray \xFF end"});
  const std::string expected =
      "ok \xC3\xA9 cut \xEF\xBF\xBD\xEF\xBF\xBD "
      "stray \xEF\xBF\xBD end";
  REQUIRE(to_prometheus_text(s).find("{event=\"" + expected + "\"}") !=
          std::string::npos);
  const std::string json = to_json(s);
  REQUIRE(json.find("\"event\":\"" + expected + "\"") != std::string::npos);
  REQUIRE(valid_json(json));
  // Overlong forms and surrogates are invalid too.
  s.events[0].event = "\xC0\xAF\xED\xA0\x80";
  REQUIRE(to_json(s).find("\"event\":\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
                          "\xEF\xBF\xBD\xEF\xBF\xBD\"") != std::string::npos);
}

TEST_CASE("exposition: HELP and TYPE once per family, before its samples",
          "[exposition]") {
  const std::string text = to_prometheus_text(sample_snapshot());
  REQUIRE(!text.empty());
  REQUIRE(text.back() == '\n');
  std::map<std::string, std::string> types;
  std::set<std::string> helped;
  std::set<std::string> closed;  // families whose samples have ended
  std::string current;
  for (const std::string& line : lines_of(text)) {
    INFO(line);
    if (line.rfind("# HELP ", 0) == 0) {
      const std::string name = line.substr(7, line.find(' ', 7) - 7);
      REQUIRE(helped.insert(name).second);
      REQUIRE(types.count(name) == 0);
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      const std::size_t space = line.find(' ', 7);
      const std::string name = line.substr(7, space - 7);
      const std::string type = line.substr(space + 1);
      REQUIRE(helped.count(name) == 1);
      REQUIRE(types.emplace(name, type).second);
      REQUIRE((type == "counter" || type == "gauge" || type == "histogram"));
      REQUIRE(name.rfind("fnbus_", 0) == 0);
      REQUIRE(ends_with(name, "_total") == (type == "counter"));
      if (type == "histogram") REQUIRE(ends_with(name, "_seconds"));
      if (!current.empty()) closed.insert(current);
      current = name;
      continue;
    }
    REQUIRE(line[0] != '#');
    const std::optional<Sample> sample = parse_sample(line);
    REQUIRE(sample.has_value());
    REQUIRE(family_of(sample->name, types) == current);
    REQUIRE(closed.count(current) == 0);
  }
  const std::vector<std::string> expected = {
      "fnbus_events_published_total",
      "fnbus_events_rejected_total",
      "fnbus_events_dispatched_total",
      "fnbus_events_unhandled_total",
      "fnbus_events_dead_lettered_total",
      "fnbus_function_delivered_total",
      "fnbus_function_failed_total",
      "fnbus_function_filtered_total",
      "fnbus_function_duplicates_total",
      "fnbus_function_rejected_total",
      "fnbus_function_fell_back_total",
      "fnbus_function_timed_out_total",
      "fnbus_function_late_total",
      "fnbus_function_retried_total",
      "fnbus_function_dead_lettered_total",
      "fnbus_function_throttled_total",
      "fnbus_function_dead_letters_total",
      "fnbus_function_breaker_state",
      "fnbus_function_breakers",
      "fnbus_function_breaker_opened_total",
      "fnbus_function_breaker_half_opened_total",
      "fnbus_function_breaker_closed_total",
      "fnbus_queue_wait_seconds",
      "fnbus_end_to_end_seconds",
      "fnbus_handler_run_seconds",
      "fnbus_queue_depth",
      "fnbus_queue_capacity",
      "fnbus_in_flight",
      "fnbus_workers",
      "fnbus_workers_busy",
      "fnbus_workers_idle",
      "fnbus_workers_parked",
      "fnbus_workers_starting",
      "fnbus_workers_retiring",
      "fnbus_workers_max",
      "fnbus_timers_pending",
      "fnbus_timers_scheduled_total",
      "fnbus_timers_fired_total",
      "fnbus_timers_cancelled_total",
      "fnbus_timers_dead_lettered_total",
      "fnbus_timers_stopped_total",
      "fnbus_dead_letters_total",
  };
  REQUIRE(types.size() == expected.size());
  for (const std::string& name : expected) REQUIRE(types.count(name) == 1);
  REQUIRE(text.find("fnbus_function_dead_letters_total{event=\"OrderCreated\","
                    "function=\"reserve_inventory\",reason=\"retries_"
                    "exhausted\"} 5\n") != std::string::npos);
  // Only the reasons a function has had.
  REQUIRE(text.find("fnbus_function_dead_letters_total{event=\"OrderCreated\","
                    "function=\"reserve_inventory\",reason=\"drain_"
                    "timeout\"}") == std::string::npos);
  REQUIRE(text.find("fnbus_dead_letters_total{reason=\"circuit_open\"} 43\n") !=
          std::string::npos);
  REQUIRE(text.find("fnbus_dead_letters_total{reason=\"wait_refused\"} 2\n") !=
          std::string::npos);
  REQUIRE(text.find("fnbus_dead_letters_total{reason=\"drain_timeout\"} 0\n") !=
          std::string::npos);
  REQUIRE(text.find("fnbus_queue_capacity 4096\n") != std::string::npos);
  REQUIRE(text.find("fnbus_workers_parked 1\n") != std::string::npos);
}

TEST_CASE(
    "exposition: breaker series are written for functions with breakers "
    "alone, the state as the most open of the live ones",
    "[exposition]") {
  MetricsSnapshot s;
  s.functions.push_back({.event = "E", .function = "plain", .delivered = 1});
  FunctionMetrics shared{.event = "E", .function = "shared"};
  shared.breakers = {.closed = 2, .half_open = 1, .open = 0};
  shared.breaker_opened = 4;
  shared.breaker_half_opened = 3;
  shared.breaker_closed = 2;
  s.functions.push_back(shared);
  // Its subscription ended: no live breaker, transitions still counted.
  FunctionMetrics ended{.event = "E", .function = "ended"};
  ended.breaker_opened = 1;
  s.functions.push_back(ended);
  const std::string text = to_prometheus_text(s);
  INFO(text);
  for (std::string_view line : {
           "# TYPE fnbus_function_breaker_state gauge\n",
           "fnbus_function_breaker_state{event=\"E\",function=\"shared\"} 1\n",
           "# TYPE fnbus_function_breakers gauge\n",
           "fnbus_function_breakers{event=\"E\",function=\"shared\","
           "state=\"closed\"} 2\n",
           "fnbus_function_breakers{event=\"E\",function=\"shared\","
           "state=\"half_open\"} 1\n",
           "fnbus_function_breakers{event=\"E\",function=\"shared\","
           "state=\"open\"} 0\n",
           "fnbus_function_breakers{event=\"E\",function=\"ended\","
           "state=\"open\"} 0\n",
           "fnbus_function_breaker_opened_total{event=\"E\",function="
           "\"shared\"} 4\n",
           "fnbus_function_breaker_half_opened_total{event=\"E\",function="
           "\"shared\"} 3\n",
           "fnbus_function_breaker_closed_total{event=\"E\",function="
           "\"shared\"} 2\n",
           "fnbus_function_breaker_opened_total{event=\"E\",function="
           "\"ended\"} 1\n",
       }) {
    INFO(line);
    CHECK(text.find(line) != std::string::npos);
  }
  std::size_t state_samples = 0;
  for (const Sample& sample : samples_of(text)) {
    if (sample.name.find("breaker") == std::string::npos) continue;
    CHECK(sample.labels.at("function") != "plain");
    if (sample.name == "fnbus_function_breaker_state") {
      CHECK(sample.labels.at("function") == "shared");
      ++state_samples;
    }
  }
  CHECK(state_samples == 1);

  const std::string json = to_json(s);
  INFO(json);
  REQUIRE(valid_json(json));
  for (std::string_view key : {
           "\"function\":\"plain\",\"delivered\":1,",
           "\"breaker_state\":null,\"breakers\":{\"closed\":0,"
           "\"half_open\":0,\"open\":0},\"breaker_opened\":0,"
           "\"breaker_half_opened\":0,\"breaker_closed\":0}",
           "\"breaker_state\":\"half_open\",\"breakers\":{\"closed\":2,"
           "\"half_open\":1,\"open\":0},\"breaker_opened\":4,"
           "\"breaker_half_opened\":3,\"breaker_closed\":2}",
           "\"breaker_state\":null,\"breakers\":{\"closed\":0,"
           "\"half_open\":0,\"open\":0},\"breaker_opened\":1,",
       }) {
    INFO(key);
    CHECK(json.find(key) != std::string::npos);
  }

  // No function with a breaker: no breaker family at all.
  s.functions.resize(1);
  CHECK(to_prometheus_text(s).find("fnbus_function_breaker") ==
        std::string::npos);
}

TEST_CASE("exposition: le bounds are the documented 25, 1 us to 60 s",
          "[exposition]") {
  MetricsSnapshot s;
  s.latency_recorded = true;
  s.events.push_back({.event = "E", .queue_wait = histogram_of({5'000})});
  std::vector<std::string> les;
  for (const Sample& sample : samples_of(to_prometheus_text(s))) {
    if (sample.name == "fnbus_queue_wait_seconds_bucket") {
      les.push_back(sample.labels.at("le"));
    }
  }
  const std::vector<std::string> expected = {
      "1e-06",   "2.5e-06", "5e-06", "1e-05",  "2.5e-05", "5e-05", "0.0001",
      "0.00025", "0.0005",  "0.001", "0.0025", "0.005",   "0.01",  "0.025",
      "0.05",    "0.1",     "0.25",  "0.5",    "1",       "2.5",   "5",
      "10",      "25",      "50",    "60",     "+Inf"};
  REQUIRE(les == expected);
  REQUIRE(kPrometheusBucketBoundsNanos.front() == 1'000);
  REQUIRE(kPrometheusBucketBoundsNanos.back() == 60'000'000'000);
}

TEST_CASE("exposition: histogram buckets are cumulative, +Inf equals _count",
          "[exposition]") {
  const MetricsSnapshot snapshot = sample_snapshot();
  const std::string text = to_prometheus_text(snapshot);
  struct Series {
    std::vector<std::uint64_t> buckets;
    std::string last_le;
    std::optional<std::uint64_t> count;
    std::optional<double> sum;
  };
  // Key: metric family + label values other than `le`.
  std::map<std::string, Series> series;
  for (const Sample& sample : samples_of(text)) {
    std::string family;
    for (std::string_view base :
         {"fnbus_queue_wait_seconds", "fnbus_end_to_end_seconds",
          "fnbus_handler_run_seconds"}) {
      if (sample.name.rfind(base, 0) == 0) family = std::string(base);
    }
    if (family.empty()) continue;
    std::string key = family;
    for (const auto& [label, value] : sample.labels) {
      if (label != "le") key += "|" + label + "=" + value;
    }
    Series& s = series[key];
    const std::string suffix = sample.name.substr(family.size());
    if (suffix == "_bucket") {
      s.buckets.push_back(to_u64(sample.value));
      s.last_le = sample.labels.at("le");
    } else if (suffix == "_count") {
      s.count = to_u64(sample.value);
    } else {
      REQUIRE(suffix == "_sum");
      s.sum = std::stod(sample.value);
    }
  }
  // 3 event types x 2 + 4 functions x 1.
  REQUIRE(series.size() == 10);
  for (const auto& [key, s] : series) {
    INFO(key);
    REQUIRE(s.buckets.size() == kPrometheusBucketBoundsNanos.size() + 1);
    REQUIRE(s.last_le == "+Inf");
    for (std::size_t i = 1; i < s.buckets.size(); ++i) {
      REQUIRE(s.buckets[i - 1] <= s.buckets[i]);
    }
    REQUIRE(s.count.has_value());
    REQUIRE(s.sum.has_value());
    REQUIRE(s.buckets.back() == *s.count);
  }

  // One series in detail: counts are count_at_or_below() of each bound.
  const FunctionMetrics& weird = snapshot.functions[1];
  const std::string key = "fnbus_handler_run_seconds|event=" + weird.event +
                          "|function=" + weird.function;
  REQUIRE(series.count(key) == 1);
  const Series& s = series.at(key);
  for (std::size_t i = 0; i < kPrometheusBucketBoundsNanos.size(); ++i) {
    REQUIRE(s.buckets[i] ==
            weird.run_time.count_at_or_below(kPrometheusBucketBoundsNanos[i]));
  }
  REQUIRE(*s.count == weird.run_time.count());
  REQUIRE(*s.sum ==
          Approx(static_cast<double>(weird.run_time.sum_nanos()) / 1e9));
  // This one has samples above 60 s: +Inf is more than le="60".
  REQUIRE(s.buckets[s.buckets.size() - 2] < s.buckets.back());
}

TEST_CASE("exposition: a bucket straddling a bound counts above it",
          "[exposition]") {
  MetricsSnapshot s;
  s.latency_recorded = true;
  // 1000 ns lies in the internal bucket [1000, 1007]: counted in le=2.5us.
  s.events.push_back(
      {.event = "E", .queue_wait = histogram_of({999, 1'000, 2'000'000})});
  const std::string text = to_prometheus_text(s);
  REQUIRE(text.find("fnbus_queue_wait_seconds_bucket{event=\"E\",le=\"1e-06\"}"
                    " 1\n") != std::string::npos);
  REQUIRE(text.find("fnbus_queue_wait_seconds_bucket{event=\"E\",le=\"2.5e-06"
                    "\"} 2\n") != std::string::npos);
  REQUIRE(text.find("fnbus_queue_wait_seconds_bucket{event=\"E\",le=\"0.0025\""
                    "} 3\n") != std::string::npos);
  REQUIRE(
      text.find("fnbus_queue_wait_seconds_sum{event=\"E\"} 0.002001999\n") !=
      std::string::npos);
  REQUIRE(text.find("fnbus_queue_wait_seconds_count{event=\"E\"} 3\n") !=
          std::string::npos);
  // An empty histogram still has its series, all zero.
  REQUIRE(text.find("fnbus_end_to_end_seconds_bucket{event=\"E\",le=\"+Inf\"}"
                    " 0\n") != std::string::npos);
  REQUIRE(text.find("fnbus_end_to_end_seconds_sum{event=\"E\"} 0\n") !=
          std::string::npos);
}

TEST_CASE("exposition: no histograms when latency_recorded is false",
          "[exposition]") {
  MetricsSnapshot s = sample_snapshot();
  s.latency_recorded = false;
  const std::string text = to_prometheus_text(s);
  REQUIRE(text.find("_seconds") == std::string::npos);
  REQUIRE(text.find("le=") == std::string::npos);
  REQUIRE(text.find("fnbus_events_published_total{event=\"OrderCreated\"} "
                    "10000\n") != std::string::npos);
  REQUIRE(text.find("fnbus_function_failed_total{event=\"OrderCreated\","
                    "function=\"reserve_inventory\"} 10\n") !=
          std::string::npos);
}

TEST_CASE("exposition: an empty snapshot has only the unlabelled families",
          "[exposition]") {
  const std::string text = to_prometheus_text(MetricsSnapshot{});
  // The only counters are the timers' (one unlabelled sample each) and
  // the dead letters by reason (one sample per reason).
  std::size_t counters = 0;
  for (std::size_t at = text.find(" counter\n"); at != std::string::npos;
       at = text.find(" counter\n", at + 1)) {
    const std::size_t line = text.rfind("# TYPE ", at);
    const bool timers = text.compare(line, 19, "# TYPE fnbus_timers") == 0;
    const bool dead_letters =
        text.compare(line, 31, "# TYPE fnbus_dead_letters_total") == 0;
    REQUIRE(timers != dead_letters);
    ++counters;
  }
  REQUIRE(counters == 6);
  REQUIRE(text.find("histogram") == std::string::npos);
  std::size_t unlabelled = 0;
  std::size_t by_reason = 0;
  for (const Sample& sample : samples_of(text)) {
    REQUIRE(sample.value == "0");
    if (sample.labels.empty()) {
      ++unlabelled;
    } else {
      REQUIRE(sample.name == "fnbus_dead_letters_total");
      ++by_reason;
    }
  }
  REQUIRE(unlabelled == 16);  // 10 gauges, the timers' gauge and 5 counters
  REQUIRE(by_reason == fnbus::kDeadLetterReasonCount);
}

TEST_CASE("exposition: to_json is valid JSON with the documented keys",
          "[exposition]") {
  const MetricsSnapshot snapshot = sample_snapshot();
  const std::string json = to_json(snapshot);
  INFO(json);
  REQUIRE(valid_json(json));
  REQUIRE(json.rfind("{\"taken_at_ns\":1234567890123,\"latency_recorded\":"
                     "true,\"events\":[{\"event\":\"OrderCreated\",",
                     0) == 0);
  for (std::string_view key :
       {"\"published\":10000", "\"rejected\":3", "\"dispatched\":9990",
        "\"unhandled\":0", "\"dead_lettered\":7", "\"queue_wait\":{",
        "\"end_to_end\":{", "\"functions\":[",
        "\"function\":", "\"delivered\":9980",
        "\"failed\":10,\"filtered\":41,\"duplicates\":42,"
        "\"rejected\":43,\"fell_back\":44,\"timed_out\":45,\"late\":46,"
        "\"retried\":47,\"dead_lettered\":48,\"throttled\":49,"
        "\"dead_letter_reasons\":{\"circuit_open\":43,"
        "\"retries_exhausted\":5},\"run_time\":{",
        "\"run_time\":{\"count\":9990,\"sum_ns\":",
        "\"gauges\":{\"queue_depth\":12,\"queue_capacity\":4096,"
        "\"in_flight\":2,\"workers\":4,\"workers_busy\":2,\"workers_idle\":1,"
        "\"workers_parked\":1,\"workers_starting\":0,"
        "\"workers_retiring\":0,\"workers_max\":0},",
        "\"timers\":{\"pending\":0,\"scheduled\":0,\"fired\":0,"
        "\"cancelled\":0,\"dead_lettered\":0,\"stopped\":0},",
        "\"dead_letters\":{\"cancelled_at_shutdown\":0,\"drain_timeout\":0,"
        "\"circuit_open\":43,",
        "\"wait_refused\":2,\"export_failed\":0,\"undecodable\":0}}"}) {
    INFO(key);
    REQUIRE(json.find(key) != std::string::npos);
  }
  REQUIRE(json.back() == '}');
}

TEST_CASE("exposition: to_json latencies carry count, sum, max, quantiles",
          "[exposition]") {
  MetricsSnapshot s;
  s.latency_recorded = true;
  HistogramSnapshot h;
  for (std::uint64_t v = 1; v <= 100; ++v) h.add(v);  // exact buckets
  s.functions.push_back({.event = "E", .function = "f", .run_time = h});
  const std::string json = to_json(s);
  REQUIRE(valid_json(json));
  REQUIRE(json.find("\"run_time\":{\"count\":100,\"sum_ns\":5050,"
                    "\"max_ns\":100,\"p50_ns\":50,\"p90_ns\":90,"
                    "\"p99_ns\":99,\"p999_ns\":100}") != std::string::npos);
  // Empty: zeros, still valid.
  s.functions[0].run_time = {};
  REQUIRE(to_json(s).find("\"run_time\":{\"count\":0,\"sum_ns\":0,"
                          "\"max_ns\":0,\"p50_ns\":0,\"p90_ns\":0,"
                          "\"p99_ns\":0,\"p999_ns\":0}") != std::string::npos);
}

TEST_CASE("exposition: to_json escapes quotes, backslashes and controls",
          "[exposition]") {
  MetricsSnapshot s;
  s.events.push_back({.event = std::string("q\"b\\n\nt\tz\x01\x1f", 11) +
                               std::string(1, '\0') + "</é>"});
  const std::string json = to_json(s);
  INFO(json);
  REQUIRE(valid_json(json));
  REQUIRE(
      json.find(R"("event":"q\"b\\n\u000at\u0009z\u0001\u001f\u0000</é>")") !=
      std::string::npos);
}

TEST_CASE("exposition: to_json leaves latencies out when not recorded",
          "[exposition]") {
  MetricsSnapshot s = sample_snapshot();
  s.latency_recorded = false;
  const std::string json = to_json(s);
  REQUIRE(valid_json(json));
  REQUIRE(json.find("\"latency_recorded\":false") != std::string::npos);
  REQUIRE(json.find("queue_wait") == std::string::npos);
  REQUIRE(json.find("run_time") == std::string::npos);
  REQUIRE(json.find("p50_ns") == std::string::npos);

  const std::string empty = to_json(MetricsSnapshot{});
  REQUIRE(valid_json(empty));
  REQUIRE(empty.rfind("{\"taken_at_ns\":0,\"latency_recorded\":false,"
                      "\"events\":[],\"functions\":[],\"gauges\":{",
                      0) == 0);
}
