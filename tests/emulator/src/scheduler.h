// Runs a grid of emulated threads on the calling OS thread (src/scheduler.cc).
#pragma once

#include <functional>

#include "moe_emu/emu.h"

namespace moe_emu {
// Blocks in order x, then y, then z; each block's threads are fibers switched at barriers and
// warp collectives. Aborts with a message on a deadlock (a barrier or collective some thread
// never reaches).
void run_grid(const LaunchSpec &spec, const std::function<void()> &body);
}  // namespace moe_emu
