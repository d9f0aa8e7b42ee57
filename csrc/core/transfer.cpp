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
// stream only).
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
#include <cstdint>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>


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

// Whether `t`'s memory is already its values as `dtype`, in row-major order
// (no cast, no gaps, no lazy conjugate or negation): a plain byte copy.
bool raw_bytes_as(const at::Tensor& t, at::ScalarType dtype) {
  return t.scalar_type() == dtype && t.is_contiguous() && !t.is_conj() && !t.is_neg();
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

namespace {

// Fills a staging chunk. Small same-dtype contiguous chunks take a plain
// memcpy (ATen's copy_ costs a dispatch and an OpenMP fork/join, which
// dominate below ~64 KB; one thread copied only ~11 GB/s on the H100 host);
// the rest take copy_into, which casts on all cores that are free (an H100
// host filled pinned memory at 40-60 GB/s with ATen's threaded copy_,
// where one thread's streaming-store memcpy managed 7 GB/s).
void fill_stage(const at::Tensor& stage, const at::Tensor& src) {
  constexpr size_t kMemcpyMax = size_t{64} << 10;
  if (src.nbytes() <= kMemcpyMax && raw_bytes_as(src, stage.scalar_type())) {
    std::memcpy(stage.data_ptr(), src.const_data_ptr(), src.nbytes());
    return;
  }
  copy_into(stage, src);
}

// Streams `pieces` (pairs of host source / device destination, same shape)
// through a ring of pinned buffers: the host fill of piece i+1 overlaps the
// DMA of piece i, and a buffer is refilled only after its DMA completed
// (an event per slot), so pinned memory stays at ring_slots x chunk.
template <typename Piece>
void pipeline(int64_t count, at::Device device, at::ScalarType dtype,
              int64_t slot_elems, Piece piece) {
  const auto stream = current_stream(device);
  const int64_t slots = std::min<int64_t>(count, transfer_tuning().ring_slots);
  std::vector<at::Tensor> ring;
  std::vector<std::optional<c10::Event>> used(slots);  // only for reused slots
  for (int64_t k = 0; k < slots; ++k)
    ring.push_back(at::empty({slot_elems}, pinned(dtype)));
  for (int64_t i = 0; i < count; ++i) {
    const int64_t k = i % slots;
    if (used[k]) used[k]->synchronize();  // its previous DMA is done
    auto [src, dst] = piece(i);
    auto stage = ring[k].narrow(0, 0, src.numel()).view(src.sizes());
    fill_stage(stage, src);
    dst.copy_(stage, /*non_blocking=*/true);
    if (i + slots < count) {
      if (!used[k]) used[k].emplace(device.type());
      used[k]->record(stream);
    }
  }
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
  const int64_t nbytes = static_cast<int64_t>(out.nbytes());
  const int64_t item = out.element_size();
  if (nbytes <= tune.direct_max_bytes) {
    // Small: the driver stages pageable memory itself before returning (so
    // the source may change at once), faster than a staging pass here.
    // The narrowing cast (if any) still runs on the host first.
    out.copy_(src.scalar_type() == bus_dtype ? src : fresh_copy(src, bus_dtype, false),
              /*non_blocking=*/true);
  } else if (src.scalar_type() == bus_dtype && !src.is_conj() && !src.is_neg() &&
             src.is_pinned()) {
    out.copy_(src, /*non_blocking=*/true);  // already DMA-able
  } else if (same_dense_layout(src, out)) {
    // Dense: chunk the flat memory, one chunk when small.
    const auto s = flat(src), o = flat(out);
    const int64_t n = o.numel();
    const int64_t step = nbytes < tune.min_chunked_bytes
                             ? n
                             : std::max<int64_t>(1, tune.chunk_bytes / item);
    pipeline((n + step - 1) / step, device, bus_dtype, std::min(step, n),
             [&](int64_t i) {
               const int64_t off = i * step, len = std::min(step, n - off);
               return std::make_pair(s.narrow(0, off, len), o.narrow(0, off, len));
             });
  } else {
    // A gappy or broadcast source: gather into a contiguous destination,
    // chunked along the outermost dimension.
    out = out.contiguous();
    const int64_t rows = out.dim() ? out.size(0) : 1;
    const int64_t step = (out.dim() == 0 || nbytes < tune.min_chunked_bytes)
                             ? rows
                             : rows_per_chunk(out, tune.chunk_bytes);
    const int64_t row_elems = out.dim() ? out.numel() / std::max<int64_t>(rows, 1) : 1;
    pipeline((rows + step - 1) / step, device, bus_dtype,
             std::max<int64_t>(1, std::min(step, rows) * row_elems), [&](int64_t i) {
               if (out.dim() == 0) return std::make_pair(src, out);
               const int64_t r = i * step, len = std::min(step, rows - r);
               return std::make_pair(src.narrow(0, r, len), out.narrow(0, r, len));
             });
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
  // Straight into pinned memory: the DMA runs at the bus rate (measured on
  // an H100: 100% of a pinned cudaMemcpy; streaming through pinned chunks
  // into pageable memory was 5-10x slower, paying page faults), and we wait
  // for the current stream only, not the whole device.
  auto out = at::empty_like(src, src.options().device(at::kCPU).pinned_memory(true),
                            at::MemoryFormat::Preserve);
  if (out.numel()) {
    out.copy_(src, /*non_blocking=*/true);
    current_stream(src.device()).synchronize();
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
// Pinned leaves from this size up skip the pack (host_to_device_batch).
constexpr int64_t kDirectPinnedBytes = int64_t{256} << 10;

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
  const bool stage_it = staged(device);
  // Leaves already in pinned memory, dense and in their bus dtype, from
  // kDirectPinnedBytes up, are DMA'd from where they are: packing them would
  // be a second host copy of a batch that tb.collate(pin_memory=True) just
  // made in pinned memory (the pack runs at memcpy speed, ~70 us a MB; a
  // copy call of its own costs a few us). The caching host allocator keeps
  // such a block from reuse until its copy is done, as for Tensor.to.
  auto direct = [&](size_t i) {
    const auto& s = srcs[i];
    return stage_it && s.is_pinned() && raw_bytes_as(s, bus[i]) &&
           static_cast<int64_t>(s.nbytes()) >= kDirectPinnedBytes;
  };
  std::vector<at::Tensor> out(srcs.size());
  std::vector<int64_t> offsets(srcs.size(), -1);
  int64_t total = 0;
  bool any_packed = false;
  for (size_t i = 0; i < srcs.size(); ++i) {
    if (direct(i)) continue;
    any_packed = true;
    offsets[i] = total;
    total += align_up(srcs[i].numel() * static_cast<int64_t>(c10::elementSize(bus[i])));
  }
  if (any_packed) {
    // One pinned buffer, one DMA, views on the far side.
    auto stage = at::empty({std::max<int64_t>(total, 1)},
                           stage_it ? pinned(at::kByte)
                                    : at::TensorOptions().dtype(at::kByte));
    auto* base = static_cast<char*>(stage.data_ptr());
    for (size_t i = 0; i < srcs.size(); ++i) {
      const auto& s = srcs[i];
      if (offsets[i] < 0 || s.numel() == 0) continue;
      if (raw_bytes_as(s, bus[i])) {
        std::memcpy(base + offsets[i], s.const_data_ptr(), s.nbytes());
      } else {
        copy_into(view_in(stage, offsets[i], bus[i], s.sizes()), s);
      }
    }
    auto buffer = at::empty({std::max<int64_t>(total, 1)},
                            at::TensorOptions().dtype(at::kByte).device(device));
    buffer.copy_(stage, /*non_blocking=*/stage_it);
    for (size_t i = 0; i < srcs.size(); ++i)
      if (offsets[i] >= 0) out[i] = view_in(buffer, offsets[i], bus[i], srcs[i].sizes());
  }
  for (size_t i = 0; i < srcs.size(); ++i) {
    if (offsets[i] >= 0) continue;
    out[i] = at::empty(srcs[i].sizes(), at::TensorOptions().dtype(bus[i]).device(device));
    out[i].copy_(srcs[i], /*non_blocking=*/true);
  }
  if (stage_it && !non_blocking) current_stream(device).synchronize();
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
