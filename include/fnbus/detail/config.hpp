#pragma once

// Build-wide constants and the one macro fnbus defines.

#include <cstddef>
#include <cstdio>
#include <cstdlib>

namespace fnbus::detail {

// Size used to pad hot atomics apart. Not std::hardware_destructive_
// interference_size: GCC 12 warns when that appears in a header.
inline constexpr std::size_t kCacheLineSize = 64;

#if defined(__SANITIZE_THREAD__)
inline constexpr bool kThreadSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr bool kThreadSanitizer = true;
#else
inline constexpr bool kThreadSanitizer = false;
#endif
#else
inline constexpr bool kThreadSanitizer = false;
#endif

[[noreturn]] inline void assertion_failed(const char* condition,
                                          const char* message, const char* file,
                                          int line) {
  std::fprintf(stderr, "fnbus: precondition failed: %s (%s) at %s:%d\n",
               message, condition, file, line);
  std::abort();
}

// Spin-wait hint for the processor.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace fnbus::detail

// Checks a documented precondition. Always on: a broken contract in a
// concurrent library is cheaper to stop than to debug.
#define FNBUS_ASSERT(cond, msg)                                          \
  do {                                                                   \
    if (!(cond)) [[unlikely]]                                            \
      ::fnbus::detail::assertion_failed(#cond, msg, __FILE__, __LINE__); \
  } while (false)
