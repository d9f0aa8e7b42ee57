#pragma once
// Parallel loops that never make the caller wait for a thread that has not
// started (parallel.cpp).
//
// torch's intra-op pool (OpenMP) ends every parallel region at a barrier:
// on a machine whose cores are all busy (a DataLoader's main process while
// its workers spin) a helper the scheduler has not run yet costs the caller
// a whole timeslice, 4-12 ms on a call that takes 0.2 ms alone. So the
// thread count is decided from what can run now (usable_threads): with
// cores free, compute uses torch's pool (its workers start at once);
// with none free, short work stays in the calling thread and long work
// runs on our own pool, whose pieces are claimed from an atomic counter by
// the caller and helpers alike: a helper that wakes late finds nothing
// left, and the caller waits only for pieces a helper already claimed.

#include <cstdint>
#include <functional>

namespace torchbridge::detail {

// Runs fn(begin, end) over [0, n) in pieces of `grain` items (the last may
// be shorter), on the calling thread and up to usable_threads() - 1
// helpers (all cores' worth from 16 pieces, busy or not: a helper that
// starts late finds nothing to wait for, and one that runs gets the job a
// larger share of a shared machine). Each piece runs exactly once; the
// first exception thrown by a piece is rethrown here after every claimed
// piece finished (pieces not yet claimed then are skipped). Pieces must not call parallel_for themselves
// (a nested call runs inline).
void parallel_for(int64_t n, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn);

// Compute work: fn(begin, end) over [0, n) on torch's own intra-op pool
// (OpenMP, through TensorIterator::for_each, which is compiled inside
// libtorch) when usable_threads() > 1, else in this thread piece by piece
// with ATen single-threaded (SerialAten). On a quiet machine torch's
// workers are the fastest start there is (they spin for ~4 ms after each
// parallel region, so the next region begins at once and owns their
// cores); on a busy one no parallel region is entered at all, so its
// barrier can never wait a timeslice for a worker the scheduler has not
// run. Pieces are at most `grain` items. Exceptions propagate.
void parallel_compute(int64_t n, int64_t grain,
                      const std::function<void(int64_t, int64_t)>& fn);

// How many threads (the caller included, at least 1) may work now: the
// cores this process may use that no other process's runnable thread
// occupies (/proc/loadavg's runnable count less this process's own
// runnable threads, estimated from its CPU time), capped by
// torch.get_num_threads(). Re-read at most every 5 ms.
int usable_threads();

// While alive, ATen ops called on this thread run single-threaded (the
// thread's OpenMP team size is 1), so an ATen kernel inside a piece of
// parallel_for never forks a team and waits at its barrier.
class SerialAten {
 public:
  SerialAten();
  ~SerialAten();
  SerialAten(const SerialAten&) = delete;
  SerialAten& operator=(const SerialAten&) = delete;

 private:
  int previous_;
};

// False in a process forked from one whose torch thread pool may have run
// (libgomp's pool does not survive fork: a parallel region there hangs);
// parallel_compute then runs on our own pool, and ATen copies serially.
bool torch_pool_usable();

// Testing and benchmarks: the helpers this process could start (cores - 1,
// less any that could not be created), and a switch that makes every
// further thread creation fail (as under RLIMIT_NPROC) to test fallbacks.
int helper_threads();
void set_fail_thread_creation(bool fail);

}  // namespace torchbridge::detail
