#pragma once
// ArrayView: a Python-free description of a foreign buffer (an ndarray's, a
// DLPack producer's, an image library's, a shared-memory segment's), and
// the one place that decides whether a tensor may share it. Every
// front-end (NumPy, DLPack, Arrow) only fills a view; the rules below are
// the same for all of them and for C++ programs.

#include <torchbridge/core.h>

#include <ATen/core/Tensor.h>
#include <ATen/dlpack.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/util/SmallVector.h>

#include <cstdint>
#include <optional>
#include <string>

namespace torchbridge {

// Keeps a foreign buffer alive: `release(context)` runs exactly once, when
// the owner (or the tensor that took it over) is gone. It may run on any
// thread, with or without Python's GIL, during interpreter exit too: a
// front-end whose release needs a lock it cannot take there must defer it
// (the Python front-end queues its decref). Move-only.
class BufferOwner {
 public:
  using Release = void (*)(void*);
  BufferOwner() = default;
  BufferOwner(void* context, Release release) noexcept
      : context_(context), release_(release) {}
  BufferOwner(BufferOwner&& o) noexcept : context_(o.context_), release_(o.release_) {
    o.release_ = nullptr;
  }
  BufferOwner& operator=(BufferOwner&& o) noexcept {
    if (this != &o) {
      reset();
      context_ = o.context_;
      release_ = o.release_;
      o.release_ = nullptr;
    }
    return *this;
  }
  BufferOwner(const BufferOwner&) = delete;
  BufferOwner& operator=(const BufferOwner&) = delete;
  ~BufferOwner() { reset(); }

  // Releases now (no-op when empty or already handed over).
  void reset() noexcept {
    if (release_) {
      Release r = release_;
      release_ = nullptr;
      r(context_);
    }
  }
  // The tensor's storage takes over: the DataPtr calls `release` instead.
  c10::DataPtr into_data_ptr(void* data, c10::Device device) && {
    c10::DataPtr p(data, context_, release_ ? release_ : &noop, device);
    release_ = nullptr;
    return p;
  }
  explicit operator bool() const { return release_ != nullptr; }

 private:
  static void noop(void*) {}
  void* context_ = nullptr;
  Release release_ = nullptr;
};

// The element type of a buffer: torch's type with the same bits when torch
// has one, and what errors need to name the ones it lacks.
struct ElementType {
  std::optional<at::ScalarType> scalar;  // nullopt: torch has no such type
  int64_t itemsize = 0;                  // bytes per element
  bool swapped = false;                  // stored in the non-native byte order
  // The producer's name, for kinds torch lacks ("object", "<U1",
  // "longdouble"); unused (may be null) when `scalar` is set.
  const char* name = nullptr;
};

struct ArrayView {
  void* data = nullptr;  // the first element (not the lowest address)
  c10::SmallVector<int64_t, 6> shape;
  c10::SmallVector<int64_t, 6> strides;  // in bytes; any sign
  ElementType dtype;
  bool writable = true;
  c10::Device device = c10::Device(c10::kCPU);
  // The producer built this buffer for this call (NumPy from a Python list
  // or scalar): there is nothing to share, and copy=False must say so.
  // `temporary_from` names what it was built from, for that error.
  bool temporary = false;
  const char* temporary_from = nullptr;
  // The producer already cast a type torch lacks (NumPy's longdouble) to
  // what it holds now; its name, so copy=False reports that cast.
  const char* cast_from = nullptr;
  BufferOwner owner;  // may be empty: then the caller keeps the memory alive

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
};

// Why a tensor cannot share a view's memory as it is.
enum class ShareBlocker {
  kNone,
  kDtype,           // the result's dtype differs
  kDevice,          // the result goes to another device
  kPin,             // pin_memory=True needs page-locked memory
  kByteOrder,       // non-native byte order
  kMisaligned,      // data not aligned to the item size
  kNegativeStride,  // tensors have no negative strides
  kOddStride,       // a stride is not a multiple of the item size
  kReadOnly,        // shared only when copy=False promises not to write
};

// The layout blockers alone (byte order, alignment, strides). Extent-0/1
// axes and empty views block nothing: their strides are never used.
ShareBlocker layout_blocker(const ArrayView& view);

// The dtype a view converts to under `options` (the dtype policy); throws
// TypeError when the view's element type has no tensor form.
at::ScalarType target_dtype(const ArrayView& view, const CoerceOptions& options);

// What stands between the view and sharing, for a result of `target`: the
// first of dtype, device, pin, layout, read-only (read-only is only a
// blocker without copy=False: copy=False shares it on the caller's word).
ShareBlocker share_blocker(const ArrayView& view, at::ScalarType target,
                           const CoerceOptions& options);

// The words after "cannot be shared because " for a blocker.
std::string share_blocker_reason(ShareBlocker why, const ArrayView& view,
                                 at::ScalarType target, const CoerceOptions& options);

// A tensor of the view's values under the dtype policy and `options`:
// sharing the buffer when it can (taking over `view.owner`), else a copy
// (kept in the buffer's memory order when it is dense, C order otherwise);
// device targets get the narrowed host data in one transfer and widen on
// the device. copy=False raises ValueError naming what blocks sharing;
// copy=True always copies. requires_grad makes the result a new leaf.
at::Tensor to_tensor(ArrayView view, const CoerceOptions& options = {});

// DLPack: a view of `t` (its DLPack 1.x `flags`: READ_ONLY makes the view
// read-only, IS_COPIED temporary), owned by `owner`. TypeError for element
// types torch lacks or vector lanes, ValueError for devices other than the
// CPU (and CUDA host memory) and CUDA. Strides are DLPack's (in elements;
// null means compact row-major).
ArrayView view_of_dlpack(const DLTensor& t, uint64_t flags, BufferOwner owner);
// The same, taking ownership of a managed tensor: its deleter runs once,
// when the view (or the tensor that shares it) is done, also on an error
// here. A major version other than this build's DLPack's is refused.
ArrayView view_of_dlpack(DLManagedTensorVersioned* managed);
ArrayView view_of_dlpack(DLManagedTensor* managed);

}  // namespace torchbridge
