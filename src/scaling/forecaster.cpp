#include "fnbus/scaling/forecaster.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string_view>
#include <system_error>
#include <utility>

#include "absl/strings/str_join.h"
#include "fmt/chrono.h"
#include "fmt/format.h"

namespace fnbus::scaling {
namespace {

constexpr std::string_view kMagic = "fnbus-forecaster";
constexpr int kFormatVersion = 1;
constexpr std::int64_t kMaxBuckets = 1 << 20;
constexpr std::uint32_t kMaxPeriods = 1'000'000;
// A "week" of 31 such days (31 years) still fits the clock's 292 years.
constexpr Duration kLongestDay = std::chrono::hours(24 * 366);

// In seconds: for the arithmetic, and for messages ("600s", "0.5s").
std::chrono::duration<double> in_seconds(Duration d) { return d; }
double seconds(Duration d) { return in_seconds(d).count(); }

// The standard normal deviate of probability p in (0, 1): Acklam's
// rational approximation (relative error < 1.2e-9).
double normal_quantile(double p) {
  static constexpr double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                                 -2.759285104469687e+02, 1.383577518672690e+02,
                                 -3.066479806614716e+01, 2.506628277459239e+00};
  static constexpr double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                                 -1.556989798598866e+02, 6.680131188771972e+01,
                                 -1.328068155288572e+01};
  static constexpr double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                                 -2.400758277161838e+00, -2.549732539343734e+00,
                                 4.374664141464968e+00,  2.938163982698783e+00};
  static constexpr double d[] = {7.784695709041462e-03, 3.224671290700398e-01,
                                 2.445134137142996e+00, 3.754408661907416e+00};
  constexpr double kLow = 0.02425;
  if (p < kLow || p > 1 - kLow) {
    const double q = std::sqrt(-2 * std::log(p < kLow ? p : 1 - p));
    const double z =
        (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    return p < kLow ? z : -z;
  }
  const double q = p - 0.5;
  const double r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) *
         q / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

std::vector<std::string> problems_of(const ForecasterOptions& options) {
  std::vector<std::string> problems;
  if (options.name.empty() ||
      std::any_of(options.name.begin(), options.name.end(),
                  [](unsigned char ch) { return std::isspace(ch) != 0; })) {
    problems.push_back(fmt::format(
        "name is '{}'; use a non-empty name without whitespace (the bus's)",
        options.name));
  }
  if (options.day <= Duration::zero()) {
    problems.push_back(
        fmt::format("day is {}; use more than 0", in_seconds(options.day)));
  } else if (options.day > kLongestDay) {
    problems.push_back(fmt::format("day is {}; use at most {} (a year)",
                                   in_seconds(options.day),
                                   in_seconds(kLongestDay)));
  }
  if (options.days_per_week < 1 || options.days_per_week > 31) {
    problems.push_back(
        fmt::format("days_per_week is {}; use 1 (no weekly shape) to 31",
                    options.days_per_week));
  }
  if (options.bucket <= Duration::zero()) {
    problems.push_back(fmt::format("bucket is {}; use more than 0",
                                   in_seconds(options.bucket)));
  } else if (options.day > Duration::zero()) {
    const auto per_day = options.day / options.bucket;
    if (options.day % options.bucket != Duration::zero()) {
      problems.push_back(fmt::format(
          "bucket is {}, which does not divide day ({}); use a divisor of it",
          in_seconds(options.bucket), in_seconds(options.day)));
    } else if (per_day * std::max(options.days_per_week, 1) > kMaxBuckets) {
      problems.push_back(fmt::format(
          "day / bucket x days_per_week is {} buckets; use longer buckets "
          "(at most {} buckets a week)",
          per_day * options.days_per_week, kMaxBuckets));
    }
  }
  if (!(options.learning_rate > 0 && options.learning_rate <= 1)) {
    problems.push_back(
        fmt::format("learning_rate is {}; use more than 0 and at most 1",
                    options.learning_rate));
  }
  if (!(options.quantile >= 0.5 && options.quantile < 1)) {
    problems.push_back(fmt::format(
        "quantile is {}; use at least 0.5 and less than 1 (e.g. 0.95)",
        options.quantile));
  }
  return problems;
}

}  // namespace

absl::StatusOr<Forecaster> Forecaster::Create(ForecasterOptions options) {
  if (auto problems = problems_of(options); !problems.empty()) {
    return absl::InvalidArgumentError("invalid ForecasterOptions: " +
                                      absl::StrJoin(problems, "; "));
  }
  const double z =
      options.quantile == 0.5 ? 0.0 : normal_quantile(options.quantile);
  return Forecaster(std::move(options), z);
}

Forecaster::Forecaster(ForecasterOptions options, double z)
    : options_(std::move(options)), z_(z) {
  const auto per_day = static_cast<std::size_t>(options_.day / options_.bucket);
  day_.resize(per_day);
  week_.resize(per_day * static_cast<std::size_t>(options_.days_per_week));
}

std::int64_t Forecaster::occurrence_of(TimePoint t) const noexcept {
  const auto since = (t - options_.origin).count();
  const auto width = options_.bucket.count();
  // Floor division: a time before the origin belongs to the bucket that
  // ends after it, as it would a week earlier.
  return since / width - (since % width < 0 ? 1 : 0);
}

bool Forecaster::observe(const LoadSnapshot& load) noexcept {
  const double rate = load.arrival_rate_fast;
  // A tick covers (now - tick, now]: it belongs where its middle is.
  const std::int64_t occurrence = occurrence_of(load.now - load.tick / 2);
  if (load.tick <= Duration::zero() || !std::isfinite(rate) || rate < 0 ||
      (filling_ && occurrence < current_)) {
    ++ignored_;
    return false;
  }
  if (filling_ && occurrence != current_) fold();
  if (!filling_) {
    filling_ = true;
    current_ = occurrence;
  }
  const double dt = seconds(load.tick);
  seconds_ += dt;
  rate_seconds_ += rate * dt;
  rate_sq_seconds_ += rate * rate * dt;
  ++observed_;
  return true;
}

void Forecaster::fold() noexcept {
  const double mean = rate_seconds_ / seconds_;
  const double mean_sq = rate_sq_seconds_ / seconds_;
  const auto update = [&](Bucket& bucket) {
    // Equal weights for the first periods, then the learning rate.
    const double weight =
        std::max(options_.learning_rate,
                 1.0 / (static_cast<double>(bucket.periods) + 1));
    bucket.mean += weight * (mean - bucket.mean);
    bucket.mean_sq += weight * (mean_sq - bucket.mean_sq);
    bucket.periods = std::min(bucket.periods + 1, kMaxPeriods);
  };
  const auto week = static_cast<std::int64_t>(week_.size());
  const auto day = static_cast<std::int64_t>(day_.size());
  update(week_[static_cast<std::size_t>(((current_ % week) + week) % week)]);
  update(day_[static_cast<std::size_t>(((current_ % day) + day) % day)]);
  filling_ = false;
  seconds_ = rate_seconds_ = rate_sq_seconds_ = 0;
}

const Forecaster::Bucket* Forecaster::learnt(
    std::int64_t occurrence) const noexcept {
  const auto week = static_cast<std::int64_t>(week_.size());
  const auto day = static_cast<std::int64_t>(day_.size());
  const Bucket& weekly =
      week_[static_cast<std::size_t>(((occurrence % week) + week) % week)];
  if (weekly.periods > 0) return &weekly;
  const Bucket& daily =
      day_[static_cast<std::size_t>(((occurrence % day) + day) % day)];
  return daily.periods > 0 ? &daily : nullptr;
}

double Forecaster::upper_of(const Bucket& bucket) const noexcept {
  const double variance =
      std::max(0.0, bucket.mean_sq - bucket.mean * bucket.mean);
  return bucket.mean + z_ * std::sqrt(variance);
}

RateForecast Forecaster::forecast(TimePoint from,
                                  Duration horizon) const noexcept {
  const std::int64_t first = occurrence_of(from);
  const auto week = static_cast<std::int64_t>(week_.size());
  std::int64_t count = 1;
  if (horizon > Duration::zero()) {
    const Duration rest =
        std::min(horizon, options_.day * options_.days_per_week);
    count = std::min(occurrence_of(from + rest) - first + 1, week);
  }
  RateForecast result;
  std::uint32_t fewest = kMaxPeriods;
  for (std::int64_t i = 0; i < count; ++i) {
    const Bucket* bucket = learnt(first + i);
    if (bucket == nullptr) {
      fewest = 0;
      continue;
    }
    fewest = std::min(fewest, bucket->periods);
    result.mean = std::max(result.mean, bucket->mean);
    result.upper = std::max(result.upper, upper_of(*bucket));
  }
  result.periods = fewest;
  return result;
}

// ---------------------------------------------------------------------------
// The file: lines of text, the last one a checksum of the others.
//
//   fnbus-forecaster 1
//   name checkout
//   season <day ns> <days_per_week> <bucket ns>
//   buckets <n>
//   w <index> <periods> <mean> <mean_sq>     (n lines, w = week, d = day)
//   end <FNV-1a 64 of every byte before this line, hex>

namespace {

std::uint64_t fnv1a(std::string_view bytes) {
  std::uint64_t hash = 14695981039346656037ull;
  for (const char ch : bytes) {
    hash ^= static_cast<unsigned char>(ch);
    hash *= 1099511628211ull;
  }
  return hash;
}

template <typename T>
bool parse(std::string_view text, T& value) {
  const auto [end, error] =
      std::from_chars(text.data(), text.data() + text.size(), value);
  return error == std::errc() && end == text.data() + text.size();
}

// The space-separated fields of a line.
std::vector<std::string_view> fields_of(std::string_view line) {
  std::vector<std::string_view> fields;
  while (!line.empty()) {
    const auto space = line.find(' ');
    if (space != 0) fields.push_back(line.substr(0, space));
    if (space == std::string_view::npos) break;
    line.remove_prefix(space + 1);
  }
  return fields;
}

absl::Status corrupt(std::string_view what) {
  return absl::DataLossError(fmt::format(
      "forecast file is corrupt: {}; delete it to relearn from zero", what));
}

struct SavedBucket {
  char kind = 'w';  // 'w': a bucket of the week, 'd': of the day
  std::size_t index = 0;
  std::uint32_t periods = 0;
  double mean = 0;
  double mean_sq = 0;
};

struct SavedFile {
  std::string name;
  std::int64_t day_ns = 0;
  int days_per_week = 0;
  std::int64_t bucket_ns = 0;
  std::vector<SavedBucket> buckets;
};

absl::Status truncated(std::string_view what) {
  return absl::DataLossError(fmt::format(
      "forecast file is truncated ({}); delete it to relearn from zero", what));
}

// The magic and version line; FailedPrecondition for another version.
absl::Status check_version(std::string_view first_line) {
  const auto header = fields_of(first_line);
  int version = 0;
  if (header.size() != 2 || header[0] != kMagic) {
    return corrupt(
        fmt::format("it does not start with '{} {}'", kMagic, kFormatVersion));
  }
  if (!parse(header[1], version)) return corrupt("its version is not a number");
  if (version != kFormatVersion) {
    return absl::FailedPreconditionError(fmt::format(
        "forecast file has format version {}; this fnbus reads version {}: "
        "load it with the fnbus that wrote it, or delete it to relearn",
        version, kFormatVersion));
  }
  return absl::OkStatus();
}

absl::StatusOr<SavedBucket> parse_bucket(std::string_view line) {
  const auto fields = fields_of(line);
  SavedBucket bucket;
  if (fields.size() != 5 || fields[0].size() != 1 ||
      (fields[0][0] != 'w' && fields[0][0] != 'd') ||
      !parse(fields[1], bucket.index) || !parse(fields[2], bucket.periods) ||
      !parse(fields[3], bucket.mean) || !parse(fields[4], bucket.mean_sq) ||
      bucket.periods == 0 || !std::isfinite(bucket.mean) || bucket.mean < 0 ||
      !std::isfinite(bucket.mean_sq) || bucket.mean_sq < 0) {
    return corrupt(fmt::format("bad bucket line '{}'", line));
  }
  bucket.kind = fields[0][0];
  return bucket;
}

// Everything in the file, checked for completeness and version; not yet
// against a forecaster's options.
absl::StatusOr<SavedFile> parse_file(std::string_view text) {
  if (text.empty()) return truncated("it is empty");
  std::vector<std::string_view> lines;
  for (std::string_view rest = text; !rest.empty();) {
    const auto newline = rest.find('\n');
    lines.push_back(rest.substr(0, newline));
    if (newline == std::string_view::npos) break;
    rest.remove_prefix(newline + 1);
  }
  if (auto status = check_version(lines.front()); !status.ok()) return status;
  const auto last = fields_of(lines.back());
  if (text.back() != '\n' || last.size() != 2 || last[0] != "end") {
    return truncated("it does not end with its end line");
  }
  std::uint64_t checksum = 0;
  const std::string_view body =
      text.substr(0, text.size() - lines.back().size() - 1);
  const auto [end, error] = std::from_chars(
      last[1].data(), last[1].data() + last[1].size(), checksum, 16);
  if (error != std::errc() || checksum != fnv1a(body)) {
    return corrupt("its checksum does not match its contents");
  }
  SavedFile file;
  const auto name = lines.size() > 4 ? fields_of(lines[1]) : decltype(last){};
  const auto season = lines.size() > 4 ? fields_of(lines[2]) : decltype(last){};
  const auto count = lines.size() > 4 ? fields_of(lines[3]) : decltype(last){};
  std::size_t buckets = 0;
  if (name.size() != 2 || name[0] != "name" || season.size() != 4 ||
      season[0] != "season" || !parse(season[1], file.day_ns) ||
      !parse(season[2], file.days_per_week) ||
      !parse(season[3], file.bucket_ns) || count.size() != 2 ||
      count[0] != "buckets" || !parse(count[1], buckets) ||
      buckets != lines.size() - 5) {
    return corrupt("its name, season or bucket count is missing or wrong");
  }
  file.name = std::string(name[1]);
  for (std::size_t i = 0; i < buckets; ++i) {
    auto bucket = parse_bucket(lines[4 + i]);
    if (!bucket.ok()) return bucket.status();
    file.buckets.push_back(*bucket);
  }
  return file;
}

}  // namespace

absl::Status Forecaster::save(std::ostream& out) const {
  std::string body =
      fmt::format("{} {}\nname {}\nseason {} {} {}\n", kMagic, kFormatVersion,
                  options_.name, options_.day.count(), options_.days_per_week,
                  options_.bucket.count());
  std::string lines;
  std::size_t count = 0;
  const auto write = [&](char kind, const std::vector<Bucket>& buckets) {
    for (std::size_t i = 0; i < buckets.size(); ++i) {
      if (buckets[i].periods == 0) continue;
      lines += fmt::format("{} {} {} {} {}\n", kind, i, buckets[i].periods,
                           buckets[i].mean, buckets[i].mean_sq);
      ++count;
    }
  };
  write('w', week_);
  write('d', day_);
  body += fmt::format("buckets {}\n", count) + lines;
  body += fmt::format("end {:016x}\n", fnv1a(body));
  out << body;
  out.flush();
  if (!out) return absl::UnavailableError("could not write the forecast");
  return absl::OkStatus();
}

absl::Status Forecaster::load(std::istream& in) {
  const std::string text{std::istreambuf_iterator<char>(in),
                         std::istreambuf_iterator<char>()};
  auto file = parse_file(text);
  if (!file.ok()) return file.status();
  if (file->name != options_.name) {
    return absl::FailedPreconditionError(fmt::format(
        "forecast file was learnt on bus '{}', not '{}': load the file of "
        "this bus, or delete it to relearn",
        file->name, options_.name));
  }
  if (file->day_ns != options_.day.count() ||
      file->days_per_week != options_.days_per_week ||
      file->bucket_ns != options_.bucket.count()) {
    return absl::FailedPreconditionError(fmt::format(
        "forecast file has a day of {}, {} days a week and buckets of {}; "
        "this forecaster has {}, {} and {}: use the options it was saved "
        "with, or delete it to relearn",
        in_seconds(Duration(file->day_ns)), file->days_per_week,
        in_seconds(Duration(file->bucket_ns)), in_seconds(options_.day),
        options_.days_per_week, in_seconds(options_.bucket)));
  }
  std::vector<Bucket> week(week_.size());
  std::vector<Bucket> day(day_.size());
  for (const SavedBucket& saved : file->buckets) {
    std::vector<Bucket>& into = saved.kind == 'w' ? week : day;
    if (saved.index >= into.size() ||
        saved.mean_sq < saved.mean * saved.mean * (1 - 1e-9)) {
      return corrupt(fmt::format("bucket {} {} is out of range or inconsistent",
                                 saved.kind, saved.index));
    }
    into[saved.index] = {saved.mean, saved.mean_sq,
                         std::min(saved.periods, kMaxPeriods)};
  }
  week_ = std::move(week);
  day_ = std::move(day);
  return absl::OkStatus();
}

absl::Status Forecaster::save_file(const std::string& path) const {
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) {
      return absl::UnavailableError(fmt::format(
          "cannot write the forecast to '{}'; check that its directory "
          "exists and is writable",
          temporary));
    }
    if (auto status = save(out); !status.ok()) return status;
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(fmt::format(
        "cannot rename '{}' to '{}' ({}); check the directory's permissions",
        temporary, path, std::generic_category().message(errno)));
  }
  return absl::OkStatus();
}

absl::Status Forecaster::load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(fmt::format(
        "no forecast file at '{}'; the forecaster starts empty and learns",
        path));
  }
  return load(in);
}

}  // namespace fnbus::scaling
