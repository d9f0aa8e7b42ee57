// The transfer engine: every host <-> device move in torchbridge goes
// through this file, so staging and stream rules live in one place.
//
// Host -> CUDA: the source is copied (and, for narrowing casts, cast) into
// pinned staging memory from PyTorch's caching host allocator, then copied
// with cudaMemcpyAsync on the current stream. Large copies go in chunks, so
// the host copy of chunk i+1 overlaps the DMA of chunk i. copy_() records
// the stream on each pinned block, so a block is reused only after its DMA
// finished: the source may change or die as soon as we return.
// CUDA -> host: into pinned memory (async DMA, then a wait on the current
// stream only); large copies can instead stream through two pinned chunks
// into pageable memory, fusing the host-side cast.
//
// Only device-generic c10 interfaces are used (pinned allocation through
// TensorOptions, c10::Stream / c10::Event), so this compiles with every
// torch build, CUDA or not.

#include "internal.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <algorithm>
#include <cstring>

namespace torchbridge::detail {

TransferTuning& transfer_tuning() {
  static TransferTuning t;
  return t;
}

namespace {

bool staged(at::Device d) { return d.is_cuda(); }

c10::Stream current_stream(at::Device d) {
  return c10::impl::VirtualGuardImpl(d.type()).getStream(d);
}

at::TensorOptions pinned(at::ScalarType dtype) {
  return at::TensorOptions().dtype(dtype).pinned_memory(true);
}

// A 1-D view of a dense tensor's memory, in memory order.
at::Tensor flat(const at::Tensor& t) {
  return t.as_strided({t.numel()}, {1}, t.storage_offset());
}

bool same_dense_layout(const at::Tensor& a, const at::Tensor& b) {
  return a.is_non_overlapping_and_dense() &&
         b.is_non_overlapping_and_dense() && a.strides() == b.strides();
}

// Chunks of `chunk_bytes` along the outermost dimension (for sources whose
// layout differs from the contiguous destination).
int64_t rows_per_chunk(const at::Tensor& out, int64_t chunk_bytes) {
  const int64_t rows = out.size(0);
  const int64_t row_bytes = std::max<int64_t>(1, out.nbytes() / std::max<int64_t>(rows, 1));
  return std::clamp<int64_t>(chunk_bytes / row_bytes, 1, std::max<int64_t>(rows, 1));
}

}  // namespace

at::Tensor host_to_device(const at::Tensor& src, at::ScalarType bus_dtype,
                          at::Device device, bool non_blocking) {
  if (!staged(device)) {
    return src.to(device, bus_dtype, non_blocking);
  }
  auto out = at::empty_like(src, src.options().device(device).dtype(bus_dtype),
                            at::MemoryFormat::Preserve);
  if (out.numel() == 0) return out;
  const auto& tune = transfer_tuning();
  if (src.scalar_type() == bus_dtype && !src.is_conj() && !src.is_neg() &&
      src.is_pinned()) {
    out.copy_(src, /*non_blocking=*/true);  // already DMA-able
  } else if (static_cast<int64_t>(out.nbytes()) < tune.min_chunked_bytes ||
             out.dim() == 0) {
    auto stage = at::empty_like(out, out.options().device(at::kCPU).pinned_memory(true),
                                at::MemoryFormat::Preserve);
    stage.copy_(src);  // gather + cast on the host, ATen's threads
    out.copy_(stage, /*non_blocking=*/true);
  } else if (same_dense_layout(src, out)) {
    const auto s = flat(src), o = flat(out);
    const int64_t n = o.numel();
    const int64_t step = std::max<int64_t>(1, tune.chunk_bytes / o.element_size());
    for (int64_t off = 0; off < n; off += step) {
      const int64_t len = std::min(step, n - off);
      auto stage = at::empty({len}, pinned(bus_dtype));
      stage.copy_(s.narrow(0, off, len));
      o.narrow(0, off, len).copy_(stage, /*non_blocking=*/true);
    }
  } else {
    out = out.contiguous();  // preserve_format could not keep a gappy layout
    const int64_t rows = out.size(0);
    const int64_t step = rows_per_chunk(out, tune.chunk_bytes);
    for (int64_t r = 0; r < rows; r += step) {
      const int64_t len = std::min(step, rows - r);
      auto o = out.narrow(0, r, len);
      auto stage = at::empty(o.sizes(), pinned(bus_dtype));
      stage.copy_(src.narrow(0, r, len));
      o.copy_(stage, /*non_blocking=*/true);
    }
  }
  if (!non_blocking) current_stream(device).synchronize();
  return out;
}

at::Tensor device_to_host(const at::Tensor& src, at::ScalarType host_dtype,
                          bool pin) {
  TORCH_INTERNAL_ASSERT(!src.is_conj() && !src.is_neg(),
                        "device_to_host: resolve conj/neg on the device first");
  if (!staged(src.device())) {
    auto h = src.to(at::kCPU);
    return (h.scalar_type() == host_dtype && (!pin || h.is_pinned()))
               ? h
               : fresh_copy(h, host_dtype, pin);
  }
  const auto& tune = transfer_tuning();
  const auto stream = current_stream(src.device());
  const int64_t nbytes = static_cast<int64_t>(src.nbytes());
  if (!pin && nbytes >= tune.d2h_chunked_min_bytes &&
      src.is_non_overlapping_and_dense() && src.dim() > 0) {
    // Two pinned chunks: the DMA of chunk i overlaps the host copy (and
    // cast) of chunk i-1 into pageable memory; the pinned pool stays small.
    auto out = at::empty_like(src, src.options().device(at::kCPU).dtype(host_dtype),
                              at::MemoryFormat::Preserve);
    const auto s = flat(src), o = flat(out);
    const int64_t n = s.numel();
    const int64_t step = std::max<int64_t>(1, tune.chunk_bytes / s.element_size());
    at::Tensor stage[2] = {at::empty({std::min(step, n)}, pinned(src.scalar_type())),
                           at::empty({std::min(step, n)}, pinned(src.scalar_type()))};
    c10::Event done[2] = {c10::Event(src.device().type()),
                          c10::Event(src.device().type())};
    int64_t prev_off = -1, prev_len = 0;
    for (int64_t off = 0, i = 0; off < n; off += step, ++i) {
      const int64_t len = std::min(step, n - off);
      auto st = stage[i % 2].narrow(0, 0, len);
      st.copy_(s.narrow(0, off, len), /*non_blocking=*/true);
      done[i % 2].record(stream);
      if (prev_off >= 0) {
        done[(i - 1) % 2].synchronize();
        o.narrow(0, prev_off, prev_len).copy_(stage[(i - 1) % 2].narrow(0, 0, prev_len));
      }
      prev_off = off;
      prev_len = len;
    }
    const int64_t last = (n - 1) / step;
    done[last % 2].synchronize();
    o.narrow(0, prev_off, prev_len).copy_(stage[last % 2].narrow(0, 0, prev_len));
    return out;
  }
  // Straight into pinned memory: the DMA runs at the bus rate, and we wait
  // for the current stream only (not the whole device).
  auto out = at::empty_like(src, src.options().device(at::kCPU).pinned_memory(true),
                            at::MemoryFormat::Preserve);
  if (out.numel()) {
    out.copy_(src, /*non_blocking=*/true);
    stream.synchronize();
  }
  return out.scalar_type() == host_dtype ? out : fresh_copy(out, host_dtype, pin);
}

at::Tensor move_to_device(const at::Tensor& src, at::Device device,
                          bool non_blocking) {
  if (src.is_cpu() && staged(device))
    return host_to_device(src, src.scalar_type(), device, non_blocking);
  return src.to(device, src.scalar_type(), non_blocking);
}

namespace {

constexpr int64_t kPackAlign = 64;  // bytes: keeps vectorized kernels happy

int64_t align_up(int64_t n) { return (n + kPackAlign - 1) / kPackAlign * kPackAlign; }

// A contiguous tensor of `dtype` and `sizes` at byte `offset` of `buffer`
// (a uint8 tensor), sharing its storage.
at::Tensor view_in(const at::Tensor& buffer, int64_t offset,
                   at::ScalarType dtype, at::IntArrayRef sizes) {
  auto t = at::detail::make_tensor<c10::TensorImpl>(
      c10::Storage(buffer.storage()),
      c10::DispatchKeySet(
          c10::computeDispatchKey(std::nullopt, at::kStrided, buffer.device())),
      c10::scalarTypeToTypeMeta(dtype));
  auto* impl = t.unsafeGetTensorImpl();
  impl->set_sizes_contiguous(sizes);
  impl->set_storage_offset((buffer.storage_offset() + offset) /
                           static_cast<int64_t>(c10::elementSize(dtype)));
  return t;
}

}  // namespace

std::vector<at::Tensor> host_to_device_batch(
    const std::vector<at::Tensor>& srcs,
    const std::vector<at::ScalarType>& bus, at::Device device,
    bool non_blocking) {
  TORCH_INTERNAL_ASSERT(srcs.size() == bus.size());
  std::vector<int64_t> offsets(srcs.size());
  int64_t total = 0;
  for (size_t i = 0; i < srcs.size(); ++i) {
    offsets[i] = total;
    total += align_up(srcs[i].numel() * static_cast<int64_t>(c10::elementSize(bus[i])));
  }
  // One pinned buffer, one DMA, views on the far side.
  auto stage = at::empty({std::max<int64_t>(total, 1)},
                         staged(device) ? pinned(at::kByte)
                                        : at::TensorOptions().dtype(at::kByte));
  auto* base = static_cast<char*>(stage.data_ptr());
  for (size_t i = 0; i < srcs.size(); ++i) {
    const auto& s = srcs[i];
    if (s.numel() == 0) continue;
    if (s.scalar_type() == bus[i] && s.is_contiguous() && !s.is_conj() && !s.is_neg()) {
      std::memcpy(base + offsets[i], s.const_data_ptr(), s.nbytes());
    } else {
      view_in(stage, offsets[i], bus[i], s.sizes()).copy_(s);
    }
  }
  auto buffer = at::empty({std::max<int64_t>(total, 1)},
                          at::TensorOptions().dtype(at::kByte).device(device));
  buffer.copy_(stage, /*non_blocking=*/staged(device));
  std::vector<at::Tensor> out;
  out.reserve(srcs.size());
  for (size_t i = 0; i < srcs.size(); ++i)
    out.push_back(view_in(buffer, offsets[i], bus[i], srcs[i].sizes()));
  if (staged(device) && !non_blocking) current_stream(device).synchronize();
  return out;
}

std::vector<at::Tensor> device_to_host_batch(const std::vector<at::Tensor>& srcs) {
  if (srcs.empty()) return {};
  const auto device = srcs.front().device();
  std::vector<at::Tensor> parts;
  std::vector<int64_t> offsets(srcs.size());
  int64_t total = 0;
  for (size_t i = 0; i < srcs.size(); ++i) {
    TORCH_INTERNAL_ASSERT(srcs[i].device() == device, "one device per batch");
    offsets[i] = total;
    const int64_t bytes = static_cast<int64_t>(srcs[i].nbytes());
    const int64_t padded = align_up(bytes);
    if (bytes > 0) {
      // Byte views of every leaf, concatenated by one kernel on the device.
      parts.push_back(srcs[i].contiguous().reshape({-1}).view(at::kByte));
    }
    if (padded > bytes)
      parts.push_back(at::empty({padded - bytes},
                                at::TensorOptions().dtype(at::kByte).device(device)));
    total += padded;
  }
  at::Tensor host;
  if (total == 0) {
    host = at::empty({1}, at::kByte);
  } else {
    auto buffer = at::cat(parts);
    host = at::empty({total}, staged(device) ? pinned(at::kByte)
                                             : at::TensorOptions().dtype(at::kByte));
    host.copy_(buffer, /*non_blocking=*/staged(device));
    if (staged(device)) current_stream(device).synchronize();
  }
  std::vector<at::Tensor> out;
  out.reserve(srcs.size());
  for (size_t i = 0; i < srcs.size(); ++i)
    out.push_back(view_in(host, offsets[i], srcs[i].scalar_type(), srcs[i].sizes()));
  return out;
}

}  // namespace torchbridge::detail
