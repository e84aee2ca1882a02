import Dispatch
import CBLAS

/// A raw pointer that may cross into a parallel loop. The caller guarantees that concurrent iterations
/// touch disjoint memory.
public struct SendablePointer<T>: @unchecked Sendable {
    public let raw: UnsafeMutablePointer<T>
    public init(_ raw: UnsafeMutablePointer<T>) { self.raw = raw }
    @inlinable public subscript(i: Int) -> T {
        get { raw[i] }
        nonmutating set { raw[i] = newValue }
    }
    @inlinable public static func + (p: SendablePointer, n: Int) -> UnsafeMutablePointer<T> { p.raw + n }
}

/// How MoEPress uses the cores. OpenBLAS runs single-threaded, always: its pthread workers busy-spin
/// after each call and would fight our own parallel loops for the second core (swift-stack.md §5).
/// Parallelism comes from `parallelFor` over experts, heads, or slices of a GEMM's output columns.
public enum Compute {
    nonisolated(unsafe) private static var configured = false
    nonisolated(unsafe) public private(set) static var threads = 1

    /// Call once at start-up (idempotent). `threads` defaults to the number of active processors.
    public static func configure(threads requested: Int? = nil) {
        let n = max(1, requested ?? ProcessInfoShim.activeProcessorCount)
        threads = n
        if !configured {
            openblas_set_num_threads(1)
            #if os(Linux)
            // Activations are allocated and freed per layer. Small ones stay on the heap (fresh mmaps' page
            // faults and zeroing would cost more than the small GEMMs around them); large ones (a long
            // layer-major chunk's) get mappings of their own, returned to the system when freed, and few
            // arenas keep freed memory from piling up per thread: a pass's anonymous memory is what it holds.
            _ = mallopt(M_MMAP_THRESHOLD, 4 << 20)
            _ = mallopt(M_TRIM_THRESHOLD, 32 << 20)
            _ = mallopt(M_ARENA_MAX, 2)
            #endif
            configured = true
        }
    }

    @inline(__always) static func ensure() { if !configured { configure() } }
}

enum ProcessInfoShim {
    static var activeProcessorCount: Int {
        #if canImport(Glibc)
        return Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        #else
        return 1
        #endif
    }
}
#if canImport(Glibc)
import Glibc
#endif

/// Runs `body(i)` for i in 0..<count on up to `Compute.threads` threads. Iterations must be independent.
public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
    Compute.ensure()
    if count <= 1 || Compute.threads <= 1 {
        for i in 0..<count { body(i) }
        return
    }
    withoutActuallyEscaping(body) { body in
        let box = UncheckedBox(body)
        DispatchQueue.concurrentPerform(iterations: count) { i in box.value(i) }
    }
}

/// Splits 0..<total into `Compute.threads` contiguous chunks (each a multiple of `align` except the last)
/// and runs them in parallel. Used to split one GEMM across cores.
public func parallelChunks(_ total: Int, align: Int = 1, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    Compute.ensure()
    let t = Compute.threads
    if t <= 1 || total < 2 * max(minChunk, align) {
        body(0..<total)
        return
    }
    var per = (total + t - 1) / t
    per = (per + align - 1) / align * align
    let chunks = (total + per - 1) / per
    parallelFor(chunks) { c in
        let lo = c * per
        let hi = min(total, lo + per)
        if lo < hi { body(lo..<hi) }
    }
}

/// Splits 0..<total into blocks of `block` (the last one shorter) and runs them on up to `Compute.threads` threads.
/// The blocks do not depend on the thread count: a BLAS call's rounding can depend on its extent (OpenBLAS picks
/// other kernels for small products), so work split this way gives the same bits on 1, 2 or 64 threads.
public func parallelBlocks(_ total: Int, block: Int, _ body: (Range<Int>) -> Void) {
    Compute.ensure()
    let b = max(1, block)
    let n = (total + b - 1) / b
    // At most `Compute.threads` workers (--threads caps the cores used); worker w takes blocks w, w + t, …
    let t = min(Compute.threads, n)
    parallelFor(t) { w in
        var i = w
        while i < n { body((i * b)..<min(total, (i + 1) * b)); i += t }
    }
}

/// Columns per BLAS call when a product is split: fixed, so results do not depend on the thread count.
public let blasColumnBlock = 256

struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ v: T) { value = v }
}
