#pragma once

// Forward declarations of the public types.

namespace fnbus {

class EventBus;
class Subscription;
class Context;
class EventRef;
class OwnedEvent;
class ThreadPool;
class Clock;
class SteadyClock;
class WorkSource;
template <typename T>
class MpmcQueue;

struct BusConfig;
struct BusStats;
struct FunctionOptions;
struct PublishOptions;
struct HandlerError;
struct DeadLetter;
struct ThreadPoolOptions;
struct ThreadPoolStats;
struct TraceContext;
struct EventTrace;
struct TraceHooks;

enum class OverflowPolicy;
enum class ShutdownMode;
enum class DeadLetterReason;
enum class Execution;

namespace metrics {
class HistogramSnapshot;
class LatencyRecorder;
struct MetricsSnapshot;
struct EventTypeMetrics;
struct FunctionMetrics;
struct Gauges;
}  // namespace metrics

namespace mesh {
struct CallOptions;
template <typename Reply>
class CallFuture;
class Service;
struct ServiceStats;
}  // namespace mesh

namespace resilience {
class DeadLetterStore;
struct DeadLetterStoreOptions;
struct StoredDeadLetter;
}  // namespace resilience

namespace testing {
class ManualClock;
}  // namespace testing

}  // namespace fnbus
