// CUDA kernels of the "mlp" family: the elementwise and reduction parts of small
// networks that carry derivative channels (value, gradient, Laplacian).
//
// Same math as kernels/reference_nn.py and kernels/cpu/mlp.py (read the channel
// layout (C, J, n), C in {1, 1 + d, 2 + d}, the parameter layout and the backward
// derivation there). The dense layers themselves are cuBLAS GEMMs over the stacked
// channels, issued from kernels/gpu/mlp.py; these kernels do everything between
// them, each in one pass over its channels:
//
//   bias_act_forward    a += b (value channel); z = sigma(a) with its channels
//                       (grad z = s1 grad a; lap z = s2 |grad a|^2 + s1 lap a); the value
//                       row of a is overwritten by s1 = sigma'(a), which with z is all the
//                       backward needs (tanh: s2 = -2 z s1, s3 = -2 s1 (1 - 3 z^2); sin:
//                       s2 = -z, s3 = -s1): the backward evaluates no transcendental function
//   output_forward      u = z_L c (+ c0), then the optional ansatz g + phi u
//   output_backward     ub = adjoint through the ansatz; zb_L = ub c^T; partial sums of
//                       dL/dc = sum z_L ub and dL/dc0 = sum ub_0
//   act_backward        (zb channels) -> (ab channels) in place (reference step 3), and the
//                       partial sums of dL/db = sum_j ab_0
//   sum_chunks          adds the per-chunk partial sums in a fixed tree
//   activation_table, ansatz_forward, ansatz_backward: the public building blocks
//
// Each kernel is a template on the element type T (float, double), instantiated
// by name expression ("act_backward<double>") from kernels/gpu/_module.py.
//
// Reductions over points (dL/db, dL/dc, dL/dc0) are deterministic: the tiled
// kernels cut the points into fixed chunks of MLP_CHUNK; within a block a thread
// adds its points in order, the warps' sums are added in warp order, and
// sum_chunks adds the chunks in a fixed tree. No atomics.
//
// Unused optional arrays (c0, phi, g, zb) arrive as null pointers.
//
// Compiled by NVRTC with CuPy's flags (-arch=sm_XX --std=c++17
// --device-as-default-execution-space -ftz=true); CUDA built-ins only.

typedef long long i64;

// Launch constants: kernels/gpu/mlp.py has the same values (its tests check).
constexpr int MLP_LANES = 32;                       // columns (units) per tiled block: one per lane
constexpr int MLP_WARPS = 8;                        // warps per tiled block: they split the points
constexpr int MLP_THREADS = MLP_LANES * MLP_WARPS;  // 256
constexpr i64 MLP_CHUNK = 64;                       // points per tiled block (the partial sums' unit)
constexpr int FINISH_THREADS = 256;

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

__device__ __forceinline__ float tanh_t(float a) { return tanhf(a); }
__device__ __forceinline__ double tanh_t(double a) { return tanh(a); }
__device__ __forceinline__ void sin_cos(float a, float* s, float* c) { sincosf(a, s, c); }
__device__ __forceinline__ void sin_cos(double a, double* s, double* c) { sincos(a, s, c); }

// z = sigma(a), s1 = sigma'(a). act: 0 tanh, 1 sin.
template <typename T>
__device__ __forceinline__ void act_value(int act, T a, T& z, T& s1)
{
    if (act == 0) {
        z = tanh_t(a);
        s1 = T(1) - z * z;
    } else {
        sin_cos(a, &z, &s1);
    }
}

// s2 = sigma'', s3 = sigma''' from z = sigma and s1 = sigma' (no transcendental call).
template <typename T>
__device__ __forceinline__ void act_higher(int act, T z, T s1, T& s2, T& s3)
{
    if (act == 0) {  // t'' = -2 t t',  t''' = -2 t' (1 - 3 t^2)
        s2 = T(-2) * z * s1;
        s3 = T(-2) * s1 * (T(1) - T(3) * z * z);
    } else {         // sin'' = -sin, sin''' = -cos
        s2 = -z;
        s3 = -s1;
    }
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v)
{
#pragma unroll
    for (int o = MLP_LANES / 2; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

// Sum over the FINISH_THREADS threads of a block, fixed tree; every thread must call.
template <typename T>
__device__ __forceinline__ T block_sum(T* shared, T acc)
{
    const int t = threadIdx.x;
    shared[t] = acc;
    __syncthreads();
    for (int half = FINISH_THREADS / 2; half > 0; half >>= 1) {
        if (t < half) {
            shared[t] += shared[t + half];
        }
        __syncthreads();
    }
    const T total = shared[0];
    __syncthreads();
    return total;
}

// The warps' sums of a tiled block, added in warp order by warp 0: returns the
// block's sum for the lane's column (meaningful in warp 0 only). Every thread must call.
template <typename T>
__device__ __forceinline__ T tile_sum(T (*red)[MLP_LANES], T acc, int warp, int lane)
{
    red[warp][lane] = acc;
    __syncthreads();
    T a = T(0);
    if (warp == 0) {
        a = red[0][lane];
        for (int w = 1; w < MLP_WARPS; ++w) {
            a += red[w][lane];
        }
    }
    return a;
}

// Ansatz, forward, for one element: R <- g + phi V with its channels (product rule).
// V and R: channel stride cs, element e; P (phi) and G (g, may be null): channel
// stride J, point j. R may be V: the Laplacian channel is written first (after
// every read of V), then the gradient channels (each reads only V_0, kept in a
// register, and itself), then the value.
template <typename T>
__device__ __forceinline__ void ansatz_fwd_elem(i64 d, i64 C, const T* V, const T* P, const T* G,
                                                T* R, i64 cs, i64 e, i64 J, i64 j)
{
    const T p0 = P[j];
    const T v0 = V[e];
    if (C == d + 2) {
        T acc = T(0);
        for (i64 k = 0; k < d; ++k) {
            acc += P[(1 + k) * J + j] * V[(1 + k) * cs + e];
        }
        T r = P[(d + 1) * J + j] * v0 + T(2) * acc + p0 * V[(d + 1) * cs + e];
        if (G) {
            r += G[(d + 1) * J + j];
        }
        R[(d + 1) * cs + e] = r;
    }
    if (C > 1) {
        for (i64 k = 0; k < d; ++k) {
            T r = P[(1 + k) * J + j] * v0 + p0 * V[(1 + k) * cs + e];
            if (G) {
                r += G[(1 + k) * J + j];
            }
            R[(1 + k) * cs + e] = r;
        }
    }
    T r = p0 * v0;
    if (G) {
        r += G[j];
    }
    R[e] = r;
}

// Ansatz, backward, for one element: R <- adjoints of v from those of g + phi v
// (reference step 1). R may be U: the value channel (which reads every channel)
// is written first, then the gradient channels (each reads itself and the
// Laplacian, kept in a register), then the Laplacian.
template <typename T>
__device__ __forceinline__ void ansatz_bwd_elem(i64 d, i64 C, const T* U, const T* P, T* R, i64 cs,
                                                i64 e, i64 J, i64 j)
{
    const bool lap = C == d + 2;
    const T p0 = P[j];
    T r = p0 * U[e];
    for (i64 k = 1; k < C; ++k) {  // gradient channels, then the Laplacian's phi_L ub_L
        r += P[k * J + j] * U[k * cs + e];
    }
    const T uL = lap ? U[(d + 1) * cs + e] : T(0);
    R[e] = r;
    if (C > 1) {
        for (i64 k = 0; k < d; ++k) {
            T rk = p0 * U[(1 + k) * cs + e];
            if (lap) {
                rk += T(2) * P[(1 + k) * J + j] * uL;
            }
            R[(1 + k) * cs + e] = rk;
        }
    }
    if (lap) {
        R[(d + 1) * cs + e] = p0 * uL;
    }
}

// Channel ch of the adjoint of u (before the ansatz) at point j, from adj (C, J)
// and phi (C, J) or null: reference step 1 for one channel.
template <typename T>
__device__ __forceinline__ T output_adjoint(i64 ch, i64 j, i64 J, i64 d, i64 C, const T* adj, const T* phi)
{
    const T u = adj[ch * J + j];
    if (!phi) {
        return u;
    }
    const T p0 = phi[j];
    if (ch == 0) {
        T r = p0 * u;
        for (i64 k = 1; k < C; ++k) {
            r += phi[k * J + j] * adj[k * J + j];
        }
        return r;
    }
    if (ch <= d) {
        T r = p0 * u;
        if (C == d + 2) {
            r += T(2) * phi[ch * J + j] * adj[(d + 1) * J + j];
        }
        return r;
    }
    return p0 * u;  // the Laplacian
}

// ---------------------------------------------------------------------------
// activation_table: out[k, e] = sigma^(k)(a[e]), k < m <= 4. Grid-stride over n.
// ---------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(256)
activation_table(const T* __restrict__ a, T* __restrict__ out, i64 n, i64 m, int act)
{
    for (i64 e = first_index(); e < n; e += grid_stride()) {
        T z, s1, s2, s3;
        act_value(act, a[e], z, s1);
        act_higher(act, z, s1, s2, s3);
        out[e] = z;
        if (m > 1) {
            out[n + e] = s1;
        }
        if (m > 2) {
            out[2 * n + e] = s2;
        }
        if (m > 3) {
            out[3 * n + e] = s3;
        }
    }
}

// ---------------------------------------------------------------------------
// ansatz_forward / ansatz_backward: v (C, J, n) (n = 1 for the output), phi and g
// (C, J). Grid-stride over the J n elements of one channel, each thread doing every
// channel of its element (so out may be v). (j, i) advance with the stride.
// ---------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(256)
ansatz_forward(const T* v, const T* __restrict__ phi, const T* __restrict__ g, T* out,
               i64 J, i64 n, i64 C, i64 d)
{
    const i64 Jn = J * n;
    const i64 S = grid_stride();
    const i64 dj = S / n;
    const i64 di = S - dj * n;
    i64 e = first_index();
    i64 j = e / n;
    i64 i = e - j * n;
    for (; e < Jn; e += S) {
        ansatz_fwd_elem(d, C, v, phi, g, out, Jn, e, J, j);
        i += di;
        j += dj;
        if (i >= n) {
            i -= n;
            ++j;
        }
    }
}

template <typename T>
__global__ void __launch_bounds__(256)
ansatz_backward(const T* adj_out, const T* __restrict__ phi, T* adj_v, i64 J, i64 n, i64 C, i64 d)
{
    const i64 Jn = J * n;
    const i64 S = grid_stride();
    const i64 dj = S / n;
    const i64 di = S - dj * n;
    i64 e = first_index();
    i64 j = e / n;
    i64 i = e - j * n;
    for (; e < Jn; e += S) {
        ansatz_bwd_elem(d, C, adj_out, phi, adj_v, Jn, e, J, j);
        i += di;
        j += dj;
        if (i >= n) {
            i -= n;
            ++j;
        }
    }
}

// ---------------------------------------------------------------------------
// bias_act_forward: A (C, J, n) holds z W for every channel (the GEMM's output).
// Adds the bias to the value channel, writes z = sigma(a) with its channels into
// Z, and overwrites A's value row by s1 = sigma'(a). Grid-stride over the J n
// elements of one channel; the column i advances with the stride.
// ---------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(256)
bias_act_forward(T* __restrict__ A, const T* __restrict__ bias, T* __restrict__ Z,
                 i64 J, i64 n, i64 C, i64 d, int act)
{
    const i64 Jn = J * n;
    const bool lap = C == d + 2;
    const i64 S = grid_stride();
    const i64 di = S % n;
    i64 e = first_index();
    i64 i = e % n;
    for (; e < Jn; e += S) {
        const T a = A[e] + bias[i];
        T z, s1;
        act_value(act, a, z, s1);
        Z[e] = z;
        A[e] = s1;
        if (C > 1) {
            T sq = T(0);
            for (i64 k = 0; k < d; ++k) {
                const T ak = A[(1 + k) * Jn + e];
                Z[(1 + k) * Jn + e] = s1 * ak;
                sq += ak * ak;
            }
            if (lap) {
                const T s2 = act == 0 ? T(-2) * z * s1 : -z;
                Z[(d + 1) * Jn + e] = s2 * sq + s1 * A[(d + 1) * Jn + e];
            }
        }
        i += di;
        if (i >= n) {
            i -= n;
        }
    }
}

// ---------------------------------------------------------------------------
// output_forward: u[ch, j] = sum_i Z[ch, j, i] c[i] (+ c0 on the value channel),
// then the ansatz when phi is given. One warp per point (grid-stride over points
// by warps): lanes stride over the N units (coalesced), a warp butterfly adds them
// (fixed order), lane 0 writes every channel and then applies the ansatz in place.
// ---------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(256)
output_forward(const T* __restrict__ Z, const T* __restrict__ c, const T* __restrict__ c0,
               const T* __restrict__ phi, const T* __restrict__ g, T* __restrict__ out,
               i64 J, i64 N, i64 C, i64 d)
{
    const int lane = threadIdx.x % MLP_LANES;
    const i64 n_warps = grid_stride() / MLP_LANES;
    for (i64 j = first_index() / MLP_LANES; j < J; j += n_warps) {  // warp-uniform
        for (i64 ch = 0; ch < C; ++ch) {
            const T* z = Z + (ch * J + j) * N;
            T acc = T(0);
            for (i64 i = lane; i < N; i += MLP_LANES) {
                acc += z[i] * c[i];
            }
            acc = warp_sum(acc);
            if (lane == 0) {
                out[ch * J + j] = (ch == 0 && c0) ? acc + c0[0] : acc;
            }
        }
        if (phi && lane == 0) {
            ansatz_fwd_elem(d, C, out, phi, g, out, J, j, J, j);
        }
    }
}

// ---------------------------------------------------------------------------
// output_backward. Grid (n_chunks, ceil((N + 1) / 32)), MLP_THREADS threads: block
// (c, t) takes the points [c MLP_CHUNK, (c + 1) MLP_CHUNK) and the columns
// i = 32 t + lane of the extended row [z_L, 1]: i < N is unit i, i = N the output
// bias. Warp w takes every 8th point. For each (point, channel) a thread forms the
// channel's adjoint ub (through the ansatz), writes zb_L = ub c_i (when zb is given)
// and adds z_L ub (i < N) or ub_0 (i = N). partial: (n_chunks, N + 1).
// ---------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(MLP_THREADS)
output_backward(const T* __restrict__ adj, const T* __restrict__ phi, const T* __restrict__ c,
                const T* __restrict__ Z, T* __restrict__ zb, T* __restrict__ partial,
                i64 J, i64 N, i64 C, i64 d)
{
    __shared__ T red[MLP_WARPS][MLP_LANES];
    const int lane = threadIdx.x % MLP_LANES;
    const int warp = threadIdx.x / MLP_LANES;
    const i64 chunk = blockIdx.x;
    const i64 i = (i64)blockIdx.y * MLP_LANES + lane;
    const i64 lo = chunk * MLP_CHUNK;
    const i64 hi = (lo + MLP_CHUNK < J) ? lo + MLP_CHUNK : J;
    T acc = T(0);
    if (i <= N) {
        const T ci = i < N ? c[i] : T(0);
        for (i64 j = lo + warp; j < hi; j += MLP_WARPS) {
            for (i64 ch = 0; ch < C; ++ch) {
                const T u = output_adjoint(ch, j, J, d, C, adj, phi);
                if (i < N) {
                    const i64 e = (ch * J + j) * N + i;
                    acc += Z[e] * u;
                    if (zb) {
                        zb[e] = u * ci;
                    }
                } else if (ch == 0) {
                    acc += u;
                }
            }
        }
    }
    const T total = tile_sum(red, acc, warp, lane);
    if (warp == 0 && i <= N) {
        partial[chunk * (N + 1) + i] = total;
    }
}

// ---------------------------------------------------------------------------
// act_backward. Grid (n_chunks, ceil(n / 32)), MLP_THREADS threads, tiled as in
// output_backward over the layer's n units. In place in X: the adjoints of z's
// channels become those of a's (reference step 3):
//   ab     = s1 zb + s2 sum_k d_k a d_k zb + (s3 sum_k (d_k a)^2 + s2 lap a) lap zb
//   d_k ab = s1 d_k zb + 2 s2 d_k a lap zb;    lap ab = s1 lap zb
// from A (the value row holding s1) and Z's value channel; partial (n_chunks, n)
// gets the chunk's sum of ab_0 (dL/db).
// ---------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(MLP_THREADS)
act_backward(const T* __restrict__ A, const T* __restrict__ Z, T* __restrict__ X,
             T* __restrict__ partial, i64 J, i64 n, i64 C, i64 d, int act)
{
    __shared__ T red[MLP_WARPS][MLP_LANES];
    const int lane = threadIdx.x % MLP_LANES;
    const int warp = threadIdx.x / MLP_LANES;
    const i64 chunk = blockIdx.x;
    const i64 i = (i64)blockIdx.y * MLP_LANES + lane;
    const i64 lo = chunk * MLP_CHUNK;
    const i64 hi = (lo + MLP_CHUNK < J) ? lo + MLP_CHUNK : J;
    const i64 Jn = J * n;
    const bool lap = C == d + 2;
    T bsum = T(0);
    if (i < n) {
        for (i64 j = lo + warp; j < hi; j += MLP_WARPS) {
            const i64 e = j * n + i;
            const T s1 = A[e];
            T s2, s3;
            act_higher(act, Z[e], s1, s2, s3);
            T ab = s1 * X[e];
            if (C > 1) {
                T acc = T(0);
                T sq = T(0);
                for (i64 k = 0; k < d; ++k) {
                    const T ak = A[(1 + k) * Jn + e];
                    acc += ak * X[(1 + k) * Jn + e];
                    sq += ak * ak;
                }
                ab += s2 * acc;
                if (lap) {
                    const T zbL = X[(d + 1) * Jn + e];
                    ab += (s3 * sq + s2 * A[(d + 1) * Jn + e]) * zbL;
                    for (i64 k = 0; k < d; ++k) {
                        const i64 ek = (1 + k) * Jn + e;
                        X[ek] = s1 * X[ek] + T(2) * s2 * A[ek] * zbL;
                    }
                    X[(d + 1) * Jn + e] = s1 * zbL;
                } else {
                    for (i64 k = 0; k < d; ++k) {
                        const i64 ek = (1 + k) * Jn + e;
                        X[ek] = s1 * X[ek];
                    }
                }
            }
            X[e] = ab;
            bsum += ab;
        }
    }
    const T total = tile_sum(red, bsum, warp, lane);
    if (warp == 0 && i < n) {
        partial[chunk * n + i] = total;
    }
}

// ---------------------------------------------------------------------------
// sum_chunks: out[q] = sum_c partial[c, q] for q < gridDim.x (partial: n_chunks rows
// of `stride`). One block of FINISH_THREADS per q: thread t adds the chunks
// t, t + FINISH_THREADS, ... in order, then a fixed tree.
// ---------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(FINISH_THREADS)
sum_chunks(const T* __restrict__ partial, i64 n_chunks, i64 stride, T* __restrict__ out)
{
    __shared__ T shared[FINISH_THREADS];
    const i64 q = blockIdx.x;
    T a = T(0);
    for (i64 c = threadIdx.x; c < n_chunks; c += FINISH_THREADS) {
        a += partial[c * stride + q];
    }
    a = block_sum(shared, a);
    if (threadIdx.x == 0) {
        out[q] = a;
    }
}
