// EventBus's hook points for a function's stages (resilience::Pipeline):
// kept out of event_bus.cpp, which only calls them.

#include <string>
#include <utility>

#include "fnbus/event_bus.hpp"
#include "fnbus/resilience/pipeline.hpp"

namespace fnbus {

detail::ErasedHandler EventBus::with_pipeline(detail::ErasedHandler handler,
                                              const FunctionOptions& options,
                                              detail::TypeSlot slot,
                                              std::string_view event_type) {
  auto pipeline =
      resilience::Pipeline::Create(options, slot, event_type, *clock_);
  if (!pipeline.ok()) {
    const std::string message(pipeline.status().message());
    detail::assertion_failed("resilience::check_options<E>(options).ok()",
                             message.c_str(), __FILE__, __LINE__);
  }
  return
      [handler = std::move(handler), pipeline = std::move(*pipeline)](
          const void* event, Context& context, absl::Status& failure) mutable {
        return pipeline->run(event, context, failure,
                             [&](absl::Status& handler_failure) {
                               return handler(event, context, handler_failure);
                             });
      };
}

void EventBus::report_circuit_open(const detail::HandlerEntry& entry,
                                   const void* event,
                                   const Context& context) noexcept {
  dead_letter_sink_.call(DeadLetter{
      .event = EventRef(entry.slot, context.event_type(), event, entry.ops),
      .reason = DeadLetterReason::kCircuitOpen,
      .trace = context.event_trace(),
      .function = entry.name});
}

}  // namespace fnbus
