// Batched conversions for tree_to_tensor / tree_to_numpy: many leaves cross
// the bus as one transfer (see detail::host_to_device_batch). Every leaf is
// validated before anything moves, so an error leaves nothing half-done:
// what was built is owned by RAII handles and freed on the way out.
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
#include <vector>

namespace torchbridge::python {
namespace {

// Goes into the packed transfer: a plain CPU tensor (no graph to keep).
bool packable_tensor(const at::Tensor& t) {
  return t.defined() && t.is_cpu() && t.layout() == at::kStrided &&
         !t.is_quantized() && t.has_storage() &&
         !(t.requires_grad() && at::GradMode::is_enabled());
}

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

}  // namespace

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
    THPObjectPtr keep;  // a NumPy scalar's temporary array
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
      if (!packable_tensor(t)) {
        singles.push_back(i);
        continue;
      }
      if (o.dtype) detail::check_target_dtype(*o.dtype, "to_tensor");
      const auto target = policy_dtype(t.scalar_type(), o.dtype, o.float_dtype);
      batch.push_back({i, t, detail::bus_dtype(t.scalar_type(), target), target,
                       THPObjectPtr()});
    } else if (PyArray_Check(leaf) || PyArray_IsScalar(leaf, Generic)) {
      THPObjectPtr keep;
      PyArrayObject* arr = reinterpret_cast<PyArrayObject*>(leaf);
      if (!PyArray_Check(leaf)) {
        keep = THPObjectPtr(PyArray_FromScalar(leaf, nullptr));
        if (!keep) throw python_error();
        arr = reinterpret_cast<PyArrayObject*>(keep.get());
      }
      PyArray_Descr* d = PyArray_DESCR(arr);
      const auto target = target_dtype(d, scalar_type_of(d), o, arr);
      // Copies NumPy must make land in the pack anyway: no pinning here.
      HostSource src = host_source(arr, target, device, /*pin_copies=*/false);
      batch.push_back({i, std::move(src.host), src.bus, target, std::move(keep)});
    } else {
      singles.push_back(i);
    }
    if (o.requires_grad && !batch.empty() && batch.back().index == i) {
      const auto t = batch.back().target;
      TORCH_CHECK_VALUE(c10::isFloatingType(t) || c10::isComplexType(t),
          "to_tensor(requires_grad=True): only floating and complex tensors "
          "can require gradients, but a leaf converts to ", dtype_name(t),
          "; pass dtype=torch.float32 (or another floating dtype).");
    }
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
