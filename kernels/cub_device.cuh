// CUB's device-wide radix sort and scan, as the kernels use them: with 64-bit item counts.
// Internal to kernels/*.cu.
#pragma once

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

// The launchers pass int64_t item counts (expert choice sorts T*E pairs, up to 2^32). CUB takes
// the count's type as a template parameter in DeviceRadixSort from CUB 2.0 and in DeviceScan only
// from CCCL 2.7 (CUDA 12.8); older versions take int and would narrow a count silently.
// (The emulation build's CUB stand-ins define no CUB_VERSION and take any count type.)
#if defined(CUB_VERSION) && CUB_VERSION < 200700
#error "libmoe needs CUB/CCCL 2.7 or newer (CUDA 12.8+): older CUB narrows 64-bit item counts to int"
#endif
