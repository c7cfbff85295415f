#include "fnbus/mesh/canary_judge.hpp"

#include <algorithm>
#include <utility>

#include "fnbus/detail/config.hpp"

namespace fnbus::mesh {

CanaryJudge::Window::Window(VersionId id, std::uint32_t size)
    : version(id), ring_(size) {}

void CanaryJudge::Window::add(bool ok, Duration latency) {
  Call& slot = ring_[next_];
  if (calls_ == ring_.size()) {  // full: the oldest call leaves
    failures_ -= slot.ok ? 0 : 1;
  } else {
    ++calls_;
  }
  slot = Call{.latency = latency, .ok = ok};
  failures_ += ok ? 0 : 1;
  next_ = next_ + 1 == ring_.size() ? 0 : next_ + 1;
}

WindowView CanaryJudge::Window::view(std::vector<Duration>& scratch,
                                     bool with_latencies) const {
  scratch.clear();
  if (with_latencies) {
    // The first calls_ slots are used until the ring is full.
    for (std::size_t i = 0; i < calls_; ++i) {
      if (ring_[i].ok) scratch.push_back(ring_[i].latency);
    }
  }
  return WindowView{
      .calls = calls_, .failures = failures_, .latencies = scratch};
}

absl::StatusOr<std::unique_ptr<CanaryJudge>> CanaryJudge::Create(
    CanaryOptions options) {
  if (absl::Status status = check(options); !status.ok()) return status;
  return std::unique_ptr<CanaryJudge>(new CanaryJudge(options));
}

std::unique_ptr<CanaryJudge::Window> CanaryJudge::take_or_make(
    VersionId version) {
  if (version == kNoVersion) return nullptr;
  if (stable_ != nullptr && stable_->version == version) {
    return std::move(stable_);
  }
  if (canary_ != nullptr && canary_->version == version) {
    return std::move(canary_);
  }
  return std::make_unique<Window>(version, options_.window_calls);
}

void CanaryJudge::set_versions(VersionId stable, VersionId canary) {
  FNBUS_ASSERT(stable != kNoVersion && stable != canary,
               "CanaryJudge::set_versions needs a stable version, other than "
               "the canary");
  std::lock_guard lock(mutex_);
  const VersionId old_canary =
      canary_ != nullptr ? canary_->version : kNoVersion;
  std::unique_ptr<Window> next_stable = take_or_make(stable);
  std::unique_ptr<Window> next_canary = take_or_make(canary);
  stable_ = std::move(next_stable);
  canary_ = std::move(next_canary);
  if (canary != old_canary) {  // a new canary is judged from its start
    canary_records_ = 0;
    fired_ = false;
  }
}

CanaryJudge::Window* CanaryJudge::window_of(VersionId version) noexcept {
  if (stable_ != nullptr && stable_->version == version) return stable_.get();
  if (canary_ != nullptr && canary_->version == version) return canary_.get();
  return nullptr;
}

std::optional<Verdict> CanaryJudge::record(VersionId version, bool ok,
                                           Duration latency) {
  FNBUS_ASSERT(version != kNoVersion, "CanaryJudge::record needs a version");
  std::lock_guard lock(mutex_);
  if (totals_.size() < version) totals_.resize(version);
  Totals& totals = totals_[version - 1];
  ++totals.calls;
  totals.failures += ok ? 0 : 1;
  Window* window = window_of(version);
  if (window == nullptr) return std::nullopt;  // left the table
  window->add(ok, latency);
  if (window == stable_.get()) ++stable_records_;
  if (window != canary_.get() || fired_) return std::nullopt;
  ++canary_records_;
  Verdict verdict = verdict_locked(canary_records_ % kLatencyCheckEvery == 0);
  if (verdict.kind != Verdict::kRollback) return std::nullopt;
  fired_ = true;
  return verdict;
}

Verdict CanaryJudge::verdict() const {
  std::lock_guard lock(mutex_);
  if (canary_ == nullptr) return {};
  return judge(stable_->view(stable_scratch_, true),
               canary_->view(canary_scratch_, true), options_);
}

Verdict CanaryJudge::verdict_locked(bool with_latencies) {
  if (canary_ == nullptr) return {};
  if (with_latencies) refresh_baseline();
  // Without latencies, an empty baseline: the latency test does not run.
  return judge(stable_->view(stable_scratch_, false),
               with_latencies ? baseline_ : LatencyBaseline{},
               canary_->view(canary_scratch_, with_latencies), options_);
}

void CanaryJudge::refresh_baseline() {
  const bool stale =
      baseline_version_ != stable_->version ||
      stable_records_ >=
          std::max<std::uint64_t>(1, options_.window_calls / 4) ||
      (stable_records_ > 0 && baseline_.successes < kMinLatencyCalls);
  if (!stale) return;
  (void)stable_->view(stable_scratch_, true);
  baseline_ = baseline_of(stable_scratch_);
  baseline_version_ = stable_->version;
  stable_records_ = 0;
}

CanaryJudge::Totals CanaryJudge::totals(VersionId version) const {
  std::lock_guard lock(mutex_);
  if (version == kNoVersion || version > totals_.size()) return {};
  return totals_[version - 1];
}

}  // namespace fnbus::mesh
