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
#include "fnbus/scaling/autoscaler.hpp"
#include "fnbus/scaling/estimator.hpp"
#include "fnbus/scaling/policies.hpp"
#include "fnbus/scaling/policy.hpp"
#include "fnbus/scaling/response_time_model.hpp"
#include "fnbus/scaling/scaling_loop.hpp"
#include "fnbus/scaling/slo_policies.hpp"
#include "fnbus/subscription.hpp"
#include "fnbus/version.hpp"
