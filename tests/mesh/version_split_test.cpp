// Tests of fnbus::mesh::VersionSplit and SplitTable: the weights hold
// statistically (seeded draws, tolerances from the binomial standard
// deviation), sticky keys, the change state machine and its errors, and a
// bounded concurrent test of route() during changes for TSan.

#include "fnbus/mesh/version_split.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "fnbus/random.hpp"

namespace {

using fnbus::Random;
using fnbus::mesh::kNoVersion;
using fnbus::mesh::Route;
using fnbus::mesh::SplitTable;
using fnbus::mesh::VersionId;
using fnbus::mesh::VersionSplit;

std::unique_ptr<VersionSplit> make(std::string_view stable = "v1") {
  auto split = VersionSplit::Create(stable);
  REQUIRE(split.ok());
  return *std::move(split);
}

VersionId deploy(VersionSplit& split, std::string_view label, double weight) {
  auto id = split.deploy_canary(label, weight);
  REQUIRE(id.ok());
  return *id;
}

// Within 5 binomial standard deviations of n * p: a correct split fails
// this about once in 1.7 million runs (and the seeds are fixed).
void check_binomial(std::uint64_t count, std::uint64_t n, double p) {
  const double mean = static_cast<double>(n) * p;
  const double sd = std::sqrt(mean * (1 - p));
  CAPTURE(count, n, p, mean, sd);
  CHECK(std::abs(static_cast<double>(count) - mean) <= 5 * sd);
}

TEST_CASE("version_split: the canary gets its weight of the calls",
          "[mesh][version_split]") {
  for (const double weight : {0.01, 0.05, 0.1, 0.5, 0.9}) {
    auto split = make();
    const VersionId v2 = deploy(*split, "v2", weight);
    Random random(42);
    constexpr std::uint64_t kCalls = 100'000;
    std::uint64_t canary = 0;
    for (std::uint64_t i = 0; i < kCalls; ++i) {
      const Route route = split->route(random.next());
      CHECK(route.version == (route.canary ? v2 : 1));
      canary += route.canary ? 1 : 0;
    }
    check_binomial(canary, kCalls, weight);
  }
}

TEST_CASE("version_split: weight 0 sends nothing to the canary, 1 everything",
          "[mesh][version_split]") {
  auto split = make();
  deploy(*split, "v2", 0.0);
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
  for (const std::uint64_t draw : {std::uint64_t{0}, std::uint64_t{1}, kMax}) {
    CHECK_FALSE(split->route(draw).canary);
  }
  REQUIRE(split->set_weight(1.0).ok());
  for (const std::uint64_t draw : {std::uint64_t{0}, std::uint64_t{1}, kMax}) {
    CHECK(split->route(draw).canary);
  }
  CHECK(split->table().weight() == 1.0);
  // Half: the top bit decides.
  REQUIRE(split->set_weight(0.5).ok());
  CHECK(split->route(kMax >> 1).canary);
  CHECK_FALSE(split->route((kMax >> 1) + 1).canary);
}

TEST_CASE("version_split: a key sticks to one version while the table stays",
          "[mesh][version_split]") {
  auto split = make();
  deploy(*split, "v2", 0.2);
  constexpr int kKeys = 10'000;
  std::vector<bool> on_canary(kKeys);
  std::uint64_t canary = 0;
  for (int k = 0; k < kKeys; ++k) {
    const std::string key = "customer-" + std::to_string(k);
    on_canary[k] = split->route_key(key).canary;
    for (int again = 0; again < 3; ++again) {
      CHECK(split->route_key(key).canary == on_canary[k]);
    }
    canary += on_canary[k] ? 1 : 0;
  }
  // The keys split by weight too (the hash is uniform enough).
  check_binomial(canary, kKeys, 0.2);

  // Raising the weight moves keys to the canary only.
  REQUIRE(split->set_weight(0.5).ok());
  std::uint64_t moved_back = 0;
  std::uint64_t now_canary = 0;
  for (int k = 0; k < kKeys; ++k) {
    const bool canary_now =
        split->route_key("customer-" + std::to_string(k)).canary;
    moved_back += on_canary[k] && !canary_now ? 1 : 0;
    now_canary += canary_now ? 1 : 0;
  }
  CHECK(moved_back == 0);
  check_binomial(now_canary, kKeys, 0.5);
}

TEST_CASE("version_split: each canary gets its own sample of keys",
          "[mesh][version_split]") {
  auto split = make();
  deploy(*split, "v2", 0.5);
  std::vector<bool> first;
  for (int k = 0; k < 1000; ++k) {
    first.push_back(split->route_key(std::to_string(k)).canary);
  }
  REQUIRE(split->rollback().ok());
  deploy(*split, "v3", 0.5);
  std::uint64_t same = 0;
  for (int k = 0; k < 1000; ++k) {
    same += split->route_key(std::to_string(k)).canary == first[k] ? 1 : 0;
  }
  // Independent samples agree on half the keys.
  check_binomial(same, 1000, 0.5);
}

TEST_CASE("version_split: bad weights are refused and change nothing",
          "[mesh][version_split]") {
  auto split = make();
  for (const double weight :
       {-0.1, 1.5, std::numeric_limits<double>::quiet_NaN(),
        std::numeric_limits<double>::infinity()}) {
    CAPTURE(weight);
    auto deployed = split->deploy_canary("v2", weight);
    CHECK(deployed.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(
        std::string(deployed.status().message()),
        Catch::Contains("canary weight is") && Catch::Contains("in [0, 1]"));
  }
  CHECK(split->table().generation == 1);
  CHECK(split->table().canary == kNoVersion);
  deploy(*split, "v2", 0.1);
  const std::uint64_t generation = split->table().generation;
  CHECK(split->set_weight(-1.0).code() == absl::StatusCode::kInvalidArgument);
  CHECK(split->set_weight(std::numeric_limits<double>::quiet_NaN()).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(split->table().generation == generation);
  CHECK(split->table().weight() == Approx(0.1));
}

TEST_CASE("version_split: bad labels are refused", "[mesh][version_split]") {
  CHECK(VersionSplit::Create("").status().code() ==
        absl::StatusCode::kInvalidArgument);
  auto split = make("v1");
  CHECK(split->deploy_canary("", 0.1).status().code() ==
        absl::StatusCode::kInvalidArgument);
  auto same = split->deploy_canary("v1", 0.1);
  CHECK(same.status().code() == absl::StatusCode::kAlreadyExists);
  CHECK_THAT(std::string(same.status().message()),
             Catch::Contains("'v1' is the stable version"));
}

TEST_CASE("version_split: promote, roll back and their errors",
          "[mesh][version_split]") {
  auto split = make("v1");
  // Nothing to change without a canary.
  for (const absl::Status& status :
       {split->promote(), split->rollback(), split->set_weight(0.5),
        split->rollback_canary(2)}) {
    CHECK(status.code() == absl::StatusCode::kFailedPrecondition);
  }
  CHECK_THAT(std::string(split->promote().message()),
             Catch::Contains("no canary to promote") &&
                 Catch::Contains("deploy_canary() first"));
  CHECK(split->table().generation == 1);

  CHECK(split->next_version() == 2);
  const VersionId v2 = deploy(*split, "v2", 0.1);
  CHECK(v2 == 2);
  // One canary at a time.
  auto second = split->deploy_canary("v3", 0.1);
  CHECK(second.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(second.status().message()),
             Catch::Contains("canary 'v2' is live"));

  REQUIRE(split->promote().ok());
  SplitTable table = split->table();
  CHECK(table.stable == v2);
  CHECK(table.canary == kNoVersion);
  CHECK(table.weight() == 0.0);
  CHECK(split->route(0).version == v2);

  const VersionId v3 = deploy(*split, "v3", 0.3);
  CHECK(v3 == 3);
  // A verdict about an older canary changes nothing.
  CHECK(split->rollback_canary(v2).code() ==
        absl::StatusCode::kFailedPrecondition);
  REQUIRE(split->rollback_canary(v3).ok());
  table = split->table();
  CHECK(table.stable == v2);
  CHECK(table.canary == kNoVersion);
  CHECK(table.generation == 5);  // Create, deploy, promote, deploy, rollback
  // Labels outlive the table (for the metrics); ids are not reused.
  CHECK(split->label(1) == "v1");
  CHECK(split->label(v3) == "v3");
  CHECK(split->label(9).empty());
  CHECK(split->label(kNoVersion).empty());
  // A rolled-back label may be deployed again, as a new version.
  CHECK(deploy(*split, "v3", 0.3) == 4);
}

TEST_CASE(
    "version_split: routes during changes each come from one published "
    "table",
    "[mesh][version_split]") {
  auto split = make("v0");
  constexpr int kReaders = 2;
  constexpr int kRoutesPerReader = 50'000;
  constexpr int kMaxChanges = 20'000;
  struct Sample {
    std::uint64_t draw;
    Route route;
  };
  std::vector<std::vector<Sample>> samples(kReaders);
  std::atomic<int> readers_done{0};
  std::atomic<bool> writing{false};
  std::vector<SplitTable> history{split->table()};  // the writer's only

  std::vector<std::thread> readers;
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&, r] {
      // Start once the writer has begun (or after 10 s: then
      // history.size() fails below), so that routes overlap changes.
      const auto give_up =
          std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (!writing.load(std::memory_order_acquire) &&
             std::chrono::steady_clock::now() < give_up) {
        std::this_thread::yield();
      }
      Random random(static_cast<std::uint64_t>(r) + 1);
      samples[r].reserve(kRoutesPerReader);
      for (int i = 0; i < kRoutesPerReader; ++i) {
        const std::uint64_t draw = random.next();
        samples[r].push_back({draw, split->route(draw)});
      }
      readers_done.fetch_add(1, std::memory_order_release);
    });
  }
  Random random(99);
  for (int change = 0; change < kMaxChanges &&
                       readers_done.load(std::memory_order_acquire) < kReaders;
       ++change) {
    const SplitTable now = split->table();
    absl::Status status;
    if (now.canary == kNoVersion) {
      status = split
                   ->deploy_canary("v" + std::to_string(change + 1),
                                   random.uniform01())
                   .status();
    } else if (change % 3 == 0) {
      status = split->set_weight(random.uniform01());
    } else {
      status = change % 2 == 0 ? split->promote() : split->rollback();
    }
    if (!status.ok()) break;
    history.push_back(split->table());
    writing.store(true, std::memory_order_release);
  }
  for (std::thread& reader : readers) reader.join();

  REQUIRE(history.size() > 1);
  std::uint64_t mismatches = 0;
  std::uint64_t unknown = 0;
  std::uint64_t went_back = 0;
  for (const std::vector<Sample>& mine : samples) {
    std::uint64_t last = 0;
    for (const Sample& sample : mine) {
      const std::uint64_t g = sample.route.generation;
      went_back += g < last ? 1 : 0;
      last = g;
      if (g < 1 || g > history.size()) {
        ++unknown;
        continue;
      }
      const Route expected = history[g - 1].route(sample.draw);
      mismatches += expected.version == sample.route.version &&
                            expected.canary == sample.route.canary
                        ? 0
                        : 1;
    }
  }
  CAPTURE(history.size());
  CHECK(unknown == 0);
  CHECK(mismatches == 0);
  CHECK(went_back == 0);  // one thread never sees an older table
}

}  // namespace
