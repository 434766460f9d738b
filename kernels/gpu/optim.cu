// CUDA kernels of the "optim" family: fused, in-place optimiser updates.
//
// Same names and math as kernels/reference.py and kernels/cpu/optim.py (read the
// update rules there); parameter names match the reference's, plus `n` (elements)
// and `n_seg` (segments). Each kernel is a template on the element type T (float,
// double), instantiated by name expression (e.g. "adam<float>") from
// kernels/gpu/_module.py, and makes one pass over memory: every element of p, g
// and the state is read once and written once.
//
// One launch updates the whole flat buffer with a grid-stride loop over elements.
// Element i belongs to segment s with bounds[s] <= i < bounds[s + 1] (empty
// segments allowed). A thread's indices only grow, so it keeps its current
// segment and its scalars lr[s], l2[s], shrink[s] in registers and looks them up
// again (binary search from the current segment on) only when it crosses a
// boundary.
//
// Unused state buffers arrive as null pointers: a kernel reads or writes them
// only under the flag that uses them. Booleans arrive as int.
//
// Compiled by NVRTC with CuPy's flags (-arch=sm_XX --std=c++17
// --device-as-default-execution-space -ftz=true): no host headers, CUDA
// built-ins only (sqrt). The compile check in compile_check.py builds every
// instantiation for sm_90 without a GPU.

typedef long long i64;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

__device__ __forceinline__ i64 first_index()
{
    return (i64)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ i64 grid_stride()
{
    return (i64)gridDim.x * blockDim.x;
}

// The current segment of a thread and its per-segment scalars.
template <typename T>
struct Segment {
    i64 s;    // segment index
    i64 end;  // bounds[s + 1]: first index past the segment
    T lr;
    T l2;
    T shrink;
};

template <typename T>
__device__ __forceinline__ Segment<T> no_segment()
{
    // end = 0 forces a lookup at the first element (i >= 0).
    Segment<T> seg = {0, 0, T(0), T(0), T(0)};
    return seg;
}

// Move `seg` to the segment holding element i (i never decreases between calls).
// Finds the last s with bounds[s] <= i, which skips empty segments, as
// numpy.searchsorted(bounds, i, side="right") - 1 does on the CPU.
template <typename T>
__device__ __forceinline__ void seek(Segment<T>& seg, i64 i,
                                     const i64* __restrict__ bounds, i64 n_seg,
                                     const T* __restrict__ lr,
                                     const T* __restrict__ l2,
                                     const T* __restrict__ shrink)
{
    if (i < seg.end) {
        return;  // the common case: still inside the current segment
    }
    // Invariant: bounds[lo] <= i < bounds[hi].
    i64 lo = seg.s;
    i64 hi = n_seg;
    while (hi - lo > 1) {
        const i64 mid = lo + ((hi - lo) >> 1);
        if (bounds[mid] <= i) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    seg.s = lo;
    seg.end = bounds[lo + 1];
    seg.lr = lr[lo];
    seg.l2 = l2[lo];
    seg.shrink = shrink[lo];
}

// lerp(a, b, w) = a + w (b - a), computed as PyTorch's lerp does (stable for w near 1).
template <typename T>
__device__ __forceinline__ T lerp_torch(T a, T b, T w)
{
    return w < T(0.5) ? a + w * (b - a) : b - (b - a) * (T(1) - w);
}

// numpy.sign: -1, 0 or 1, and NaN for NaN.
template <typename T>
__device__ __forceinline__ T sign_of(T x)
{
    return x > T(0) ? T(1) : (x < T(0) ? T(-1) : (x == x ? T(0) : x));
}

// numpy.maximum: NaN if either argument is NaN (fmax would drop it).
template <typename T>
__device__ __forceinline__ T nan_max(T a, T b)
{
    return (b != b || b > a) ? b : a;
}

// ---------------------------------------------------------------------------
// Updates. In every kernel: ge = grad_mul * g + l2[s] * p.
// ---------------------------------------------------------------------------

// p <- shrink p - lr ge
template <typename T>
__global__ void sgd(T* __restrict__ p, const T* __restrict__ g,
                    const i64* __restrict__ bounds, const T* __restrict__ lr,
                    const T* __restrict__ l2, const T* __restrict__ shrink,
                    T grad_mul, i64 n, i64 n_seg)
{
    Segment<T> seg = no_segment<T>();
    for (i64 i = first_index(); i < n; i += grid_stride()) {
        seek(seg, i, bounds, n_seg, lr, l2, shrink);
        const T pi = p[i];
        const T ge = grad_mul * g[i] + seg.l2 * pi;
        p[i] = seg.shrink * pi - seg.lr * ge;
    }
}

// m <- beta m - lr ge;  p <- shrink p + m
template <typename T>
__global__ void heavy_ball(T* __restrict__ p, const T* __restrict__ g,
                           T* __restrict__ m,
                           const i64* __restrict__ bounds, const T* __restrict__ lr,
                           const T* __restrict__ l2, const T* __restrict__ shrink,
                           T grad_mul, T beta, i64 n, i64 n_seg)
{
    Segment<T> seg = no_segment<T>();
    for (i64 i = first_index(); i < n; i += grid_stride()) {
        seek(seg, i, bounds, n_seg, lr, l2, shrink);
        const T pi = p[i];
        const T ge = grad_mul * g[i] + seg.l2 * pi;
        const T mi = beta * m[i] - seg.lr * ge;
        m[i] = mi;
        p[i] = seg.shrink * pi + mi;
    }
}

// buf <- ge (first step) or momentum buf + (1 - dampening) ge;
// d = ge + momentum buf (Nesterov) or buf;  p <- shrink p - lr d
template <typename T>
__global__ void sgd_momentum(T* __restrict__ p, const T* __restrict__ g,
                             T* __restrict__ buf,
                             const i64* __restrict__ bounds, const T* __restrict__ lr,
                             const T* __restrict__ l2, const T* __restrict__ shrink,
                             T grad_mul, T momentum, double dampening, int nesterov,
                             int first_step, i64 n, i64 n_seg)
{
    const T keep = T(1.0 - dampening);  // the complement in double, then rounded once
    Segment<T> seg = no_segment<T>();
    for (i64 i = first_index(); i < n; i += grid_stride()) {
        seek(seg, i, bounds, n_seg, lr, l2, shrink);
        const T pi = p[i];
        const T ge = grad_mul * g[i] + seg.l2 * pi;
        // On the first step buf holds no state yet: it is not read.
        const T bi = first_step ? ge : momentum * buf[i] + keep * ge;
        buf[i] = bi;
        const T d = nesterov ? ge + momentum * bi : bi;
        p[i] = seg.shrink * pi - seg.lr * d;
    }
}

// m <- lerp(m, ge, 1 - beta1);  v <- beta2 v + (1 - beta2) ge^2;
// AMSGrad: vmax <- max(vmax, v), used in place of v;
// p <- shrink p - lr m / (sqrt(v) / bc2_sqrt + eps)
template <typename T>
__global__ void adam(T* __restrict__ p, const T* __restrict__ g,
                     T* __restrict__ m, T* __restrict__ v, T* __restrict__ vmax,
                     const i64* __restrict__ bounds, const T* __restrict__ lr,
                     const T* __restrict__ l2, const T* __restrict__ shrink,
                     T grad_mul, double beta1, double beta2, T eps, T bc2_sqrt, int amsgrad,
                     i64 n, i64 n_seg)
{
    // The complements in double, then rounded once: 1 - (float)0.999 is 108 ulps off.
    const T w1 = T(1.0 - beta1);
    const T w2 = T(1.0 - beta2);
    Segment<T> seg = no_segment<T>();
    for (i64 i = first_index(); i < n; i += grid_stride()) {
        seek(seg, i, bounds, n_seg, lr, l2, shrink);
        const T pi = p[i];
        const T ge = grad_mul * g[i] + seg.l2 * pi;
        const T mi = lerp_torch(m[i], ge, w1);
        T vi = T(beta2) * v[i] + w2 * ge * ge;
        m[i] = mi;
        v[i] = vi;
        if (amsgrad) {
            vi = nan_max(vmax[i], vi);
            vmax[i] = vi;
        }
        const T denom = sqrt(vi) / bc2_sqrt + eps;
        p[i] = seg.shrink * pi - seg.lr * (mi / denom);
    }
}

// m, v as in Adam;  denom = sqrt(v / bc2) + eps;
// p <- shrink p - lr coef_g ge / denom - lr coef_m m / denom
template <typename T>
__global__ void nadam(T* __restrict__ p, const T* __restrict__ g,
                      T* __restrict__ m, T* __restrict__ v,
                      const i64* __restrict__ bounds, const T* __restrict__ lr,
                      const T* __restrict__ l2, const T* __restrict__ shrink,
                      T grad_mul, double beta1, double beta2, T eps, T bc2, T coef_g, T coef_m,
                      i64 n, i64 n_seg)
{
    // The complements in double, then rounded once: 1 - (float)0.999 is 108 ulps off.
    const T w1 = T(1.0 - beta1);
    const T w2 = T(1.0 - beta2);
    Segment<T> seg = no_segment<T>();
    for (i64 i = first_index(); i < n; i += grid_stride()) {
        seek(seg, i, bounds, n_seg, lr, l2, shrink);
        const T step_g = seg.lr * coef_g;
        const T step_m = seg.lr * coef_m;
        const T pi = p[i];
        const T ge = grad_mul * g[i] + seg.l2 * pi;
        const T mi = lerp_torch(m[i], ge, w1);
        const T vi = T(beta2) * v[i] + w2 * ge * ge;
        m[i] = mi;
        v[i] = vi;
        const T denom = sqrt(vi / bc2) + eps;
        p[i] = seg.shrink * pi - step_g * (ge / denom) - step_m * (mi / denom);
    }
}

// sq <- alpha sq + (1 - alpha) ge^2;  centred: gavg <- lerp(gavg, ge, 1 - alpha),
// avg = sqrt(sq - gavg^2) + eps, else sqrt(sq) + eps;
// momentum > 0: buf <- momentum buf + ge / avg, p <- shrink p - lr buf;
// else p <- shrink p - lr ge / avg.  gavg / buf are null when unused.
template <typename T>
__global__ void rmsprop(T* __restrict__ p, const T* __restrict__ g,
                        T* __restrict__ sq, T* __restrict__ gavg, T* __restrict__ buf,
                        const i64* __restrict__ bounds, const T* __restrict__ lr,
                        const T* __restrict__ l2, const T* __restrict__ shrink,
                        T grad_mul, double alpha, T eps, T momentum, int centered,
                        i64 n, i64 n_seg)
{
    const T w = T(1.0 - alpha);  // the complement in double, then rounded once
    const bool use_momentum = momentum > T(0);
    Segment<T> seg = no_segment<T>();
    for (i64 i = first_index(); i < n; i += grid_stride()) {
        seek(seg, i, bounds, n_seg, lr, l2, shrink);
        const T pi = p[i];
        const T ge = grad_mul * g[i] + seg.l2 * pi;
        const T sqi = T(alpha) * sq[i] + w * ge * ge;
        sq[i] = sqi;
        T avg;
        if (centered) {
            const T gai = lerp_torch(gavg[i], ge, w);
            gavg[i] = gai;
            avg = sqrt(sqi - gai * gai) + eps;
        } else {
            avg = sqrt(sqi) + eps;
        }
        if (use_momentum) {
            const T bi = momentum * buf[i] + ge / avg;
            buf[i] = bi;
            p[i] = seg.shrink * pi - seg.lr * bi;
        } else {
            p[i] = seg.shrink * pi - seg.lr * (ge / avg);
        }
    }
}

// ssum <- ssum + ge^2;  p <- shrink p - lr ge / (sqrt(ssum) + eps)
template <typename T>
__global__ void adagrad(T* __restrict__ p, const T* __restrict__ g,
                        T* __restrict__ ssum,
                        const i64* __restrict__ bounds, const T* __restrict__ lr,
                        const T* __restrict__ l2, const T* __restrict__ shrink,
                        T grad_mul, T eps, i64 n, i64 n_seg)
{
    Segment<T> seg = no_segment<T>();
    for (i64 i = first_index(); i < n; i += grid_stride()) {
        seek(seg, i, bounds, n_seg, lr, l2, shrink);
        const T pi = p[i];
        const T ge = grad_mul * g[i] + seg.l2 * pi;
        const T si = ssum[i] + ge * ge;
        ssum[i] = si;
        p[i] = seg.shrink * pi - seg.lr * (ge / (sqrt(si) + eps));
    }
}

// c = lerp(m, ge, 1 - beta1);  p <- shrink p - lr sign(c);  m <- lerp(m, ge, 1 - beta2)
template <typename T>
__global__ void lion(T* __restrict__ p, const T* __restrict__ g,
                     T* __restrict__ m,
                     const i64* __restrict__ bounds, const T* __restrict__ lr,
                     const T* __restrict__ l2, const T* __restrict__ shrink,
                     T grad_mul, double beta1, double beta2, i64 n, i64 n_seg)
{
    // The complements in double, then rounded once: 1 - (float)0.999 is 108 ulps off.
    const T w1 = T(1.0 - beta1);
    const T w2 = T(1.0 - beta2);
    Segment<T> seg = no_segment<T>();
    for (i64 i = first_index(); i < n; i += grid_stride()) {
        seek(seg, i, bounds, n_seg, lr, l2, shrink);
        const T pi = p[i];
        const T ge = grad_mul * g[i] + seg.l2 * pi;
        const T mi = m[i];
        const T c = lerp_torch(mi, ge, w1);
        p[i] = seg.shrink * pi - seg.lr * sign_of(c);
        m[i] = lerp_torch(mi, ge, w2);
    }
}

// ---------------------------------------------------------------------------
// grad_sumsq: sum g_i^2 in double, deterministic.
//
// Pass 1: block b sums the fixed chunk [b * SUMSQ_CHUNK, (b + 1) * SUMSQ_CHUNK)
// into partial[b]: each thread adds its strided elements in index order, then a
// fixed shared-memory tree. Pass 2: one block adds the partials the same way.
// Chunks depend on n only (not on the device or on timing), and nothing is
// atomic, so the result is bit-identical from run to run. Both kernels must be
// launched with SUMSQ_THREADS threads per block (the launcher's constants match).
// ---------------------------------------------------------------------------

constexpr int SUMSQ_THREADS = 256;
constexpr i64 SUMSQ_CHUNK = 8192;

__device__ __forceinline__ double block_sum(double* shared, double acc)
{
    const int t = threadIdx.x;
    shared[t] = acc;
    __syncthreads();
    for (int half = SUMSQ_THREADS / 2; half > 0; half >>= 1) {
        if (t < half) {
            shared[t] += shared[t + half];
        }
        __syncthreads();
    }
    return shared[0];
}

template <typename T>
__global__ void __launch_bounds__(SUMSQ_THREADS)
grad_sumsq_partial(const T* __restrict__ g, i64 n, double* __restrict__ partial)
{
    __shared__ double shared[SUMSQ_THREADS];
    const i64 lo = (i64)blockIdx.x * SUMSQ_CHUNK;
    const i64 hi = (lo + SUMSQ_CHUNK < n) ? lo + SUMSQ_CHUNK : n;
    double acc = 0.0;
    for (i64 i = lo + threadIdx.x; i < hi; i += SUMSQ_THREADS) {
        const double x = (double)g[i];
        acc += x * x;
    }
    const double total = block_sum(shared, acc);
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = total;
    }
}

__global__ void __launch_bounds__(SUMSQ_THREADS)
grad_sumsq_finish(const double* __restrict__ partial, i64 n_partial,
                  double* __restrict__ out)
{
    __shared__ double shared[SUMSQ_THREADS];
    double acc = 0.0;
    for (i64 b = threadIdx.x; b < n_partial; b += SUMSQ_THREADS) {
        acc += partial[b];
    }
    const double total = block_sum(shared, acc);
    if (threadIdx.x == 0) {
        out[0] = total;
    }
}
