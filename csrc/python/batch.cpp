// Batched conversions for tree_to_tensor / tree_to_numpy: many leaves cross
// the bus as one transfer (see detail::host_to_device_batch). Every leaf is
// validated before anything moves, so an error leaves nothing half-done:
// what was built is owned by RAII handles and freed on the way out.
// Also the stacking of lists that hold tensors (to_tensor / to_numpy).
//
// Sequences are snapshotted into a tuple before any work: conversions drop
// the GIL, and another thread may then empty or refill the caller's list,
// freeing items a borrowed pointer would still read.

#include "convert.h"
#include "dtypes.h"

#include "../core/internal.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/object_ptr.h>

#include <map>
#include <string>
#include <vector>

namespace torchbridge::python {
namespace {

// Goes into the packed transfer: a plain CPU tensor (no graph to keep).
void set_item(PyObject* list, Py_ssize_t i, PyObject* value) {
  if (!value) throw python_error();
  PyList_SET_ITEM(list, i, value);  // steals; slots start as NULL
}

// A strong-reference snapshot of a list's items (see the top of the file).
THPObjectPtr snapshot(PyObject* seq) {
  THPObjectPtr items(PySequence_Tuple(seq));
  if (!items) throw python_error();
  return items;
}

// Exact types first: THPVariable_Check on a non-tensor falls back to a full
// isinstance() against torch.Tensor's metaclass, and lists of numbers are
// scanned element by element.
bool is_tensor(PyObject* o) {
  if (PyFloat_CheckExact(o) || PyLong_CheckExact(o) || PyBool_Check(o) ||
      PyList_CheckExact(o) || PyTuple_CheckExact(o) || PyArray_Check(o) ||
      PyArray_IsScalar(o, Generic) || PyUnicode_CheckExact(o) || o == Py_None)
    return false;
  return THPVariable_Check(o);
}

bool holds_tensor_at(PyObject* seq, int depth) {
  if (depth > 32 || !(PyList_Check(seq) || PyTuple_Check(seq))) return false;
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* item = PySequence_Fast_GET_ITEM(seq, i);
    if (is_tensor(item) || holds_tensor_at(item, depth + 1)) return true;
  }
  return false;
}

}  // namespace

bool holds_tensor(PyObject* obj) { return holds_tensor_at(obj, 0); }

at::Tensor stack_tensors(PyObject* seq, const ToTensorOptions& o,
                         const char* api) {
  THPObjectPtr snap = snapshot(seq);
  const Py_ssize_t n = PyTuple_GET_SIZE(snap.get());
  TORCH_CHECK_VALUE(!(o.copy.has_value() && !*o.copy), api,
      "(copy=False): a list of ", std::to_string(n), " tensors cannot share "
      "memory with one tensor; stacking them is a copy. Pass copy=None.");
  if (o.dtype) detail::check_target_dtype(*o.dtype, api);

  // Every item as a tensor of its own dtype (arrays and numbers shared or
  // converted by to_tensor's rules); the policy applies to the stack.
  ToTensorOptions keep;
  keep.float_dtype = std::nullopt;
  std::vector<at::Tensor> items;
  items.reserve(n);
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* item = PyTuple_GET_ITEM(snap.get(), i);
    if (is_tensor(item)) {
      items.push_back(THPVariable_Unpack(item));
    } else if (holds_tensor(item)) {
      items.push_back(stack_tensors(item, keep, api));
    } else {
      THPObjectPtr t(to_tensor(item, keep));
      if (!t) throw python_error();
      items.push_back(THPVariable_Unpack(t.get()));
    }
  }
  int64_t bytes = 0;
  bool on_host = true;
  for (const auto& t : items) {
    bytes += t.numel() * static_cast<int64_t>(t.element_size());
    on_host &= t.device().is_cpu();
  }
  // `items` and `snap` hold everything the stacking reads.
  GilRelease nogil(!on_host || (o.device && !o.device->is_cpu()) ||
                   bytes >= kReleaseGilBytes);
  return detail::stack_tensors(std::move(items), o, api);
}

PyObject* to_tensor_batch(PyObject* leaves, const ToTensorOptions& o) {
  TORCH_CHECK_TYPE(PyList_Check(leaves), "_to_tensor_batch expects a list");
  THPObjectPtr snap = snapshot(leaves);
  leaves = snap.get();
  const Py_ssize_t n = PyTuple_GET_SIZE(leaves);
  TORCH_INTERNAL_ASSERT(o.device.has_value(), "_to_tensor_batch needs a device");
  const at::Device device = resolve_device(*o.device);
  THPObjectPtr result(PyList_New(n));
  if (!result) throw python_error();

  // copy=False can never hold for a device target, and non-CPU sources take
  // their own path: such leaves convert one by one (raising where due).
  struct Item {
    Py_ssize_t index;
    at::Tensor host;
    at::ScalarType bus, target;
    THPObjectPtr keep;  // a NumPy scalar's temporary array, or NumPy's cast
    ArrayView view;     // what `host` borrows
  };
  std::vector<Item> batch;
  std::vector<Py_ssize_t> singles;
  const bool by_one = o.copy.has_value() && !*o.copy;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* leaf = PyTuple_GET_ITEM(leaves, i);
    if (by_one) {
      singles.push_back(i);
    } else if (!PyArray_Check(leaf) && THPVariable_Check(leaf)) {
      const at::Tensor& t = THPVariable_Unpack(leaf);
      if (!detail::packable(t)) {
        singles.push_back(i);
        continue;
      }
      const auto target = detail::target_dtype(t.scalar_type(), o, "to_tensor");
      batch.push_back({i, t, detail::bus_dtype(t.scalar_type(), target), target,
                       THPObjectPtr(), ArrayView()});
    } else if (PyArray_Check(leaf) || PyArray_IsScalar(leaf, Generic)) {
      THPObjectPtr keep;
      PyArrayObject* arr = reinterpret_cast<PyArrayObject*>(leaf);
      if (!PyArray_Check(leaf)) {
        keep = THPObjectPtr(PyArray_FromScalar(leaf, nullptr));
        if (!keep) throw python_error();
        arr = reinterpret_cast<PyArrayObject*>(keep.get());
      }
      THPObjectPtr cast;
      ArrayView view = array_view(arr, o, /*own=*/false, false, cast);
      if (cast) keep = std::move(cast);
      const auto target = detail::target_dtype(view, o, "to_tensor");
      // Copies the layout forces land in the pack anyway: no pinning here.
      auto src = detail::host_source(view, target, device, /*pin_copies=*/false);
      batch.push_back({i, std::move(src.host), src.bus, target, std::move(keep),
                       std::move(view)});
    } else {
      singles.push_back(i);
    }
    if (o.requires_grad && !batch.empty() && batch.back().index == i)
      detail::check_requires_grad(batch.back().target, "to_tensor", "a leaf converts to");
  }
  // One by one first: their errors surface before the batch moves.
  for (Py_ssize_t i : singles)
    set_item(result.get(), i, to_tensor(PyTuple_GET_ITEM(leaves, i), o));

  std::vector<at::Tensor> moved;
  if (!batch.empty()) {
    std::vector<at::Tensor> hosts;
    std::vector<at::ScalarType> bus;
    for (const auto& b : batch) {
      hosts.push_back(b.host);
      bus.push_back(b.bus);
    }
    GilRelease nogil;
    moved = detail::host_to_device_batch(hosts, bus, device, o.non_blocking);
    for (size_t k = 0; k < batch.size(); ++k) {
      if (moved[k].scalar_type() != batch[k].target)
        moved[k] = moved[k].to(batch[k].target);  // widen on the device
      if (o.requires_grad) moved[k].requires_grad_(true);
    }
  }
  for (size_t k = 0; k < batch.size(); ++k)
    set_item(result.get(), batch[k].index, THPVariable_Wrap(std::move(moved[k])));
  return result.release();
}

PyObject* to_numpy_batch(PyObject* leaves, PyArray_Descr* want,
                         std::optional<bool> copy) {
  TORCH_CHECK_TYPE(PyList_Check(leaves), "_to_numpy_batch expects a list");
  THPObjectPtr snap = snapshot(leaves);
  leaves = snap.get();
  const Py_ssize_t n = PyTuple_GET_SIZE(leaves);
  THPObjectPtr result(PyList_New(n));
  if (!result) throw python_error();

  // A requested dtype torch can make goes through to_host; anything else
  // (a NumPy-only cast) and copy=False take the one-by-one path.
  std::optional<at::ScalarType> want_st;
  bool by_one = copy.has_value() && !*copy;
  if (want) {
    want_st = scalar_type_of(want);
    if (!want_st || (PyDataType_ELSIZE(want) > 1 && !PyArray_ISNBO(want->byteorder)))
      by_one = true;
  }
  HostOptions ho;
  ho.dtype = want_st;
  ho.copy = copy;
  struct Item {
    Py_ssize_t index;
    const at::Tensor* source;
    detail::HostPlan plan;
  };
  std::map<c10::DeviceIndex, std::vector<Item>> groups;  // CUDA leaves, by index
  std::vector<Py_ssize_t> singles;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* leaf = PyTuple_GET_ITEM(leaves, i);
    if (!by_one && !PyArray_Check(leaf) && THPVariable_Check(leaf)) {
      const at::Tensor& t = THPVariable_Unpack(leaf);
      if (t.defined() && t.is_cuda()) {
        auto plan = detail::plan_host(t, ho, "to_numpy");  // validates
        groups[t.device().index()].push_back({i, &t, std::move(plan)});
        continue;
      }
    }
    singles.push_back(i);
  }
  for (Py_ssize_t i : singles)
    set_item(result.get(), i, to_numpy(PyTuple_GET_ITEM(leaves, i), want, copy));

  for (auto& [index, items] : groups) {
    std::vector<at::Tensor> hosts;
    {
      GilRelease nogil;
      std::vector<at::Tensor> srcs;
      for (const auto& it : items) srcs.push_back(it.plan.tensor);
      hosts = detail::device_to_host_batch(srcs);
      for (size_t k = 0; k < items.size(); ++k)
        hosts[k] = detail::finish_host(*items[k].source, std::move(hosts[k]),
                                       items[k].plan.target, ho);
    }
    for (size_t k = 0; k < items.size(); ++k) {
      PyArray_Descr* d = nullptr;
      if (want) {
        Py_INCREF(want);
        d = want;
      } else {
        d = descr_of(hosts[k].scalar_type());
      }
      set_item(result.get(), items[k].index, export_tensor(hosts[k], d));
    }
  }
  return result.release();
}

}  // namespace torchbridge::python
