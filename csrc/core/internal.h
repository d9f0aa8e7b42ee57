#pragma once
// Private helpers of the core, shared by its .cpp files and by the Python
// extension (which names its own entry point in error messages).

#include <torchbridge/array_view.h>
#include <torchbridge/columns.h>
#include <torchbridge/core.h>
#include <torchbridge/npy.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace torchbridge::detail {

// `api` is the entry point users called ("to_numpy", "coerce"); every error
// message starts with it.
at::Tensor to_host(const at::Tensor& t, const HostOptions& o, const char* api);

// to_host in two halves, for the batched transfer of many tensors:
// plan_host validates (all errors happen here), detaches, densifies,
// dequantizes, and on a device narrows and resolves conj/neg, returning
// the tensor to move and the final dtype; finish_host takes the moved (or
// CPU) tensor to that dtype and applies pin/copy.
struct HostPlan {
  at::Tensor tensor;
  at::ScalarType target;
};
HostPlan plan_host(const at::Tensor& t, const HostOptions& o, const char* api);
at::Tensor finish_host(const at::Tensor& t, at::Tensor moved,
                       at::ScalarType target, const HostOptions& o);
at::Tensor coerce(const at::Tensor& t, const CoerceOptions& o, const char* api);

// ArrayView (array_view.cpp); `api` names the entry point in errors.
at::ScalarType target_dtype(const ArrayView& v, const CoerceOptions& o, const char* api);
// The same for a source dtype: TypeError for an unusable dtype=, then the policy.
at::ScalarType target_dtype(at::ScalarType src, const CoerceOptions& o, const char* api);
// The view as a tensor, shared or copied by the rules (takes v.owner only
// when the result shares the buffer; else the caller still holds it).
at::Tensor to_tensor(ArrayView& v, const CoerceOptions& o, const char* api);
// A tensor borrowing the view's memory (no layout blocker): it must not
// outlive the view.
at::Tensor borrow(const ArrayView& v);
// A fresh CPU tensor of a CPU view's values in `target` (any layout; pinned
// with `pin`), in the view's memory order when it is dense, else C order.
at::Tensor copy_view(const ArrayView& v, at::ScalarType target, bool pin);
// What crosses the bus for a view bound for `device`: the view itself when
// its layout allows, else a copy (pinned when `pin_copies` and the device
// is CUDA), and the dtype to send (the target when that narrows, else the
// view's own).
struct HostSource {
  at::Tensor host;
  at::ScalarType bus;
};
HostSource host_source(ArrayView& v, at::ScalarType target, at::Device device,
                       bool pin_copies);
// host_to_device, then the widening cast on the device.
at::Tensor upload(const HostSource& src, at::ScalarType target, at::Device device,
                  bool non_blocking);
// Stacks equal-shaped views (of `common`, their promoted type) along a new
// first axis, under the policy and options: one pass when every view is
// dense and of `common`.
at::Tensor stack(std::vector<ArrayView>& views, at::ScalarType common,
                 const CoerceOptions& o, const char* api);
// Columns (columns.cpp): columns_to_tensor naming `api` in errors.
at::Tensor columns_to_tensor(std::vector<Column>& columns, const ColumnsOptions& layout,
                             const CoerceOptions& o, const char* api);

// The copy inside `stack`, into an output the caller allocated (shared
// memory for a DataLoader worker, pinned memory, ...): `out` is a dense
// C-order CPU tensor of shape [views.size(), *item shape] in the target
// dtype, which the cast to runs inside the copy; the views are of equal
// shape (checked by the caller) and of `common` or a type promoting to it.
void stack_into(std::vector<ArrayView>& views, at::ScalarType common,
                const at::Tensor& out, const char* api);
// to_numpy of an array: the array itself, a copy, or a cast copy, by copy=
// and whether its dtype must change (`cast`). ValueError for copy=False
// when the input was built for this call (`temporary_from` says how) or
// must be cast (`cast_words()` names the cast, built only then).
enum class ArrayResult { kItself, kCopy, kCast };
ArrayResult array_result(bool temporary, bool cast, std::optional<bool> copy,
                         const char* api, const char* temporary_from,
                         const std::function<std::string()>& cast_words);

// Stacks equal-shaped tensors along a new first axis (a list holding
// tensors): on their common device (or device=, gathering them there), in
// the promoted dtype under the policy; the graph is kept (at::stack) when
// an item requires grad, else the cast runs inside the stacking copy.
// ValueError names the element whose shape or device differs.
at::Tensor stack_tensors(std::vector<at::Tensor> items, const CoerceOptions& o,
                         const char* api);
// ValueError unless `t` can require gradients; `what` leads the dtype
// ("the result is").
void check_requires_grad(at::ScalarType t, const char* api, const char* what);
// `t` as a new autograd leaf that requires grad (after that check).
at::Tensor new_leaf(const at::Tensor& t, const char* api);

// Whether an ndarray may view `t` as it is: a strided CPU tensor with
// readable storage and no conj/neg bit, not quantized or nested.
bool exportable(const at::Tensor& t);
// Whether to_numpy returns a view of `t` itself: exportable, copy not
// forced, and the requested dtype (none: t's own, which NumPy must have)
// is t's.
bool exportable_as(const at::Tensor& t, std::optional<at::ScalarType> want,
                   std::optional<bool> copy);
// Whether a tree leaf can go into one packed host-to-device transfer: a
// strided CPU tensor with storage, not quantized, with no graph to keep.
bool packable(const at::Tensor& t);

// Whether a strided tensor's storage holds its data here: false for
// placeholder storages (wrapper subclasses, fake and functional tensors).
bool has_readable_storage(const at::Tensor& t);

// Throws ValueError unless `t` holds readable data (defined, not meta, not
// nested, has readable storage when strided).
void check_has_data(const at::Tensor& t, const char* api);

// Throws unless page-locked memory can be had (a CUDA device is present).
void check_pin_available(const char* api);

// Throws TypeError when `t` cannot be a conversion target (quantized, bits).
void check_target_dtype(at::ScalarType t, const char* api);

// A fresh tensor with `src`'s values in `dtype` on `src`'s device, laid out
// like `src` when it is dense (torch's preserve_format), page-locked when
// `pin` is set. Resolves conj/neg bits. Records autograd like copy_.
at::Tensor fresh_copy(const at::Tensor& src, at::ScalarType dtype, bool pin);

// Faults the whole pages of [p, p + n) in as written, in one call
// (MADV_POPULATE_WRITE; a no-op where the kernel lacks it): about half the
// cost of taking the same faults one by one as a copy first writes them.
void prefault(void* p, size_t n);

// Fresh CPU memory for an output (host_memory.cpp): c10's CPU allocation
// with 4 KB pages (why not huge pages: see there), and freed blocks of
// 256 KB up to the cap kept mapped for the next output of their size (at
// most 8 blocks and TORCHBRIDGE_HOST_CACHE_MB in all, default 64). .npy
// loads allocate here too. The tensor's storage
// allocates through the same cache, so resize_ works as on any tensor.
at::Tensor empty_host(at::IntArrayRef sizes, at::IntArrayRef strides,
                      at::ScalarType dtype);
// (blocks, bytes) held by that cache now; for tests.
std::pair<int, size_t> host_cache_state();

// float64 -> float32 over n contiguous values in this thread, with the
// vector instructions the CPU has (cast_dense's loop).
void narrow_f64_run(float* d, const double* s, int64_t n);

// Fills `numel` dense elements of `dst` (fresh memory) from `src` (same
// memory order) when the pair is a plain copy or a policy cast (float64 ->
// float32, complex128 -> complex64): in this thread up to 128 KB of output,
// above it in pieces on parallel.h's pool (prefaulting fresh output from
// 32 MB). Returns false for any other pair (use copy_into).
bool cast_dense(void* dst, at::ScalarType dst_type, const void* src,
                at::ScalarType src_type, int64_t numel);

// Stacks `srcs.size()` dense blocks of `numel` items of `src_type` (same
// memory order as the output) into `dst` one after another, as cast_dense
// would each, in pieces of several blocks on parallel.h's pool. Returns
// false, having written nothing, when cast_dense does not take the pair.
bool stack_dense(void* dst, at::ScalarType dst_type,
                 const std::vector<const void*>& srcs, at::ScalarType src_type,
                 int64_t numel);

// dst.copy_(src) for CPU tensors of one shape, without waiting on a helper
// thread that has not started (parallel.h): cast_dense when it applies,
// else ATen's copy_ on pieces of the largest dimension, each piece
// single-threaded. Narrowing casts from float64 (to float16, bfloat16,
// float8; complex128 to complex32) round once, as NumPy does, where ATen's
// kernels round twice (through float32). Records autograd like copy_.
void copy_into(const at::Tensor& dst, const at::Tensor& src);

// The dtype that crosses the bus when `from` must become `to`: the target
// when the cast narrows (it runs before the transfer), else the source's own
// (a widening cast runs after it). Fewer bytes on the bus either way.
inline at::ScalarType bus_dtype(at::ScalarType from, at::ScalarType to) {
  return c10::elementSize(to) < c10::elementSize(from) ? to : from;
}

// The transfer engine (transfer.cpp). Knobs are private: set by benchmarks
// to sweep them; the defaults come from measurements on an H100 (README).
struct TransferTuning {
  // Picked by benchmarks/bench_transfer.py --sweep on an H100 (PCIe 5 x16,
  // bus 54 GB/s pinned): 16 MB chunks through 3 pinned buffers gave 46.5
  // GB/s at 256 MB and 52.6 at 1 GB; below 16 MB one staged copy is as fast
  // as a pipeline. The host's pageable->pinned copy (40-44 GB/s there) is
  // the ceiling for large uploads from pageable memory.
  int64_t chunk_bytes = int64_t{16} << 20;        // pipelined chunk size
  int64_t min_chunked_bytes = int64_t{16} << 20;  // H2D: chunk from here up
  int64_t ring_slots = 3;                          // pinned staging buffers
  // Up to this size an upload from pageable memory goes straight through
  // the driver (torch's own copy): in four H100 runs staging lost at 1 MB
  // (0.63-0.88x of the naive form) and was even at best below it.
  int64_t direct_max_bytes = int64_t{1} << 20;
};
TransferTuning& transfer_tuning();

// A CPU tensor to `device` as `bus_dtype` (the cast runs on the host, in
// the staging copy). With `non_blocking` it returns once the copies are
// enqueued on the device's current stream; the source may change or die
// at once. Keeps dense layouts.
at::Tensor host_to_device(const at::Tensor& src, at::ScalarType bus_dtype,
                          at::Device device, bool non_blocking);

// A device tensor (conj/neg already resolved) to the host as `host_dtype`,
// complete on return. CUDA copies land in pinned memory (PyTorch's caching
// host allocator); `pin` also keeps a host-side cast's result pinned.
at::Tensor device_to_host(const at::Tensor& src, at::ScalarType host_dtype,
                          bool pin);

// Moves `src` to `device` keeping its dtype (staged for CPU -> CUDA).
at::Tensor move_to_device(const at::Tensor& src, at::Device device,
                          bool non_blocking);

// Many CPU tensors to one device in one transfer: packed into one pinned
// buffer (64-byte aligned slots, cast to bus[i] while packing), one copy,
// and contiguous views of one device buffer on the far side; leaves of
// 256 KB and more already pinned (dense, bus dtype) are copied from where
// they are instead, each into its own device tensor.
std::vector<at::Tensor> host_to_device_batch(
    const std::vector<at::Tensor>& srcs, const std::vector<at::ScalarType>& bus,
    at::Device device, bool non_blocking);

// Many tensors of one device to the host in one transfer (one concatenating
// kernel, one copy, one wait): contiguous views of one pinned buffer.
std::vector<at::Tensor> device_to_host_batch(const std::vector<at::Tensor>& srcs);

}  // namespace torchbridge::detail
