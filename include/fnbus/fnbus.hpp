#pragma once

// Umbrella header: the whole public API of fnbus.

#include "fnbus/clock.hpp"
#include "fnbus/event.hpp"
#include "fnbus/event_bus.hpp"
#include "fnbus/exec/thread_pool.hpp"
#include "fnbus/fwd.hpp"
#include "fnbus/metrics/exposition.hpp"
#include "fnbus/metrics/histogram.hpp"
#include "fnbus/metrics/snapshot.hpp"
#include "fnbus/options.hpp"
#include "fnbus/queue/mpmc_queue.hpp"
#include "fnbus/subscription.hpp"
