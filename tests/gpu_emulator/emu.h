// A CPU emulator of the CUDA features fastopt's kernels use: blocks run one after another,
// the threads of a block are ucontext fibers switched at __syncthreads and warp shuffles
// (warp-scoped barriers), so the real .cu source runs unchanged on the host.
// Built and driven by plugin.py beside this file (read README.md there: what it checks, what not).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <string>
#include <functional>
#include <ucontext.h>

struct emu_uint3 { unsigned x, y, z; };
static emu_uint3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __shared__ static

inline void sincospi(double a, double* s, double* c) {
    long double p = 3.141592653589793238462643383279502884L * (long double)a;
    *s = (double)sinl(p); *c = (double)cosl(p);
}
inline void sincospif(float a, float* s, float* c) {
    long double p = 3.141592653589793238462643383279502884L * (long double)a;
    *s = (float)sinl(p); *c = (float)cosl(p);
}

namespace emu {
enum { READY = 0, BLOCK_WAIT = 1, WARP_WAIT = 2, DONE = 3 };
struct Fiber { ucontext_t ctx; char* stack = nullptr; int state = DONE; };
static std::vector<Fiber> fibers;
static ucontext_t sched;
static int cur = -1;
static std::function<void()> body;
static unsigned char slots[1024][8];
static const size_t STACK = 128 * 1024;
static std::string err;

static void trampoline() { body(); fibers[cur].state = DONE; }
static void yield(int st) { fibers[cur].state = st; swapcontext(&fibers[cur].ctx, &sched); }
static unsigned linear_tid() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }

static bool run_block(unsigned n) {
    if (fibers.size() < n) fibers.resize(n);
    for (unsigned i = 0; i < n; ++i) {
        Fiber& f = fibers[i];
        if (!f.stack) f.stack = (char*)malloc(STACK);
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = STACK;
        f.ctx.uc_link = &sched;
        makecontext(&f.ctx, trampoline, 0);
        f.state = READY;
    }
    for (;;) {
        bool ran = false;
        for (unsigned i = 0; i < n; ++i) {
            if (fibers[i].state != READY) continue;
            cur = (int)i;
            threadIdx.x = i % blockDim.x;
            threadIdx.y = (i / blockDim.x) % blockDim.y;
            threadIdx.z = i / (blockDim.x * blockDim.y);
            swapcontext(&sched, &fibers[i].ctx);
            ran = true;
        }
        if (ran) continue;
        unsigned done = 0, bw = 0;
        for (unsigned i = 0; i < n; ++i) {
            done += fibers[i].state == DONE;
            bw += fibers[i].state == BLOCK_WAIT;
        }
        if (done == n) return true;
        bool released = false;
        for (unsigned w = 0; w * 32 < n; ++w) {
            unsigned lo = w * 32, hi = lo + 32 < n ? lo + 32 : n, ww = 0, other = 0;
            for (unsigned i = lo; i < hi; ++i) {
                if (fibers[i].state == WARP_WAIT) ++ww; else ++other;
            }
            if (ww == 0) continue;
            if (other) { err = "warp shuffle with lanes not all at the same shuffle (divergent or exited)"; return false; }
            for (unsigned i = lo; i < hi; ++i) fibers[i].state = READY;
            released = true;
        }
        if (released) continue;
        if (bw) {
            if (done) { err = "__syncthreads with exited threads"; return false; }
            for (unsigned i = 0; i < n; ++i) fibers[i].state = READY;
            continue;
        }
        err = "deadlock";
        return false;
    }
}

template <class F>
int launch(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, F f) {
    err.clear();
    gridDim = {gx, gy, gz};
    blockDim = {bx, by, bz};
    body = f;
    unsigned n = bx * by * bz;
    for (unsigned z = 0; z < gz; ++z)
        for (unsigned y = 0; y < gy; ++y)
            for (unsigned x = 0; x < gx; ++x) {
                blockIdx = {x, y, z};
                if (!run_block(n)) return 1;
            }
    return 0;
}
}  // namespace emu

inline void __syncthreads() { emu::yield(emu::BLOCK_WAIT); }

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int o) {
    static_assert(sizeof(T) <= 8, "shuffle of a type over 8 bytes");
    if (mask != 0xffffffffu || o <= 0 || o >= 32) { emu::err = "bad shuffle"; }
    unsigned tid = emu::linear_tid();
    unsigned partner = (tid & ~31u) | ((tid & 31u) ^ (unsigned)o);
    memcpy(emu::slots[tid], &v, sizeof(T));
    emu::yield(emu::WARP_WAIT);
    T r;
    memcpy(&r, emu::slots[partner], sizeof(T));
    emu::yield(emu::WARP_WAIT);
    return r;
}

extern "C" const char* emu_error() { return emu::err.c_str(); }
