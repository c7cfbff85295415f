#pragma once

// Forward declarations of the public types.

namespace fnbus {

class EventBus;
class Subscription;
class Context;
class EventRef;
class ThreadPool;
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

enum class OverflowPolicy;
enum class ShutdownMode;
enum class DeadLetterReason;

}  // namespace fnbus
