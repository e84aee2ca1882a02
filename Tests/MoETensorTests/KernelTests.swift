import Foundation
import Testing
import CKernels
@testable import MoETensor

/// Random weights and inputs for the kernel tests, and the products and summation order they are checked against.
enum KernelData {
    struct Case { let m: Int, n: Int, k: Int }
    static let cases: [Case] = [
        .init(m: 1, n: 1, k: 1), .init(m: 1, n: 37, k: 15), .init(m: 1, n: 64, k: 256), .init(m: 2, n: 9, k: 17),
        .init(m: 3, n: 13, k: 100), .init(m: 4, n: 40, k: 64), .init(m: 5, n: 33, k: 48), .init(m: 9, n: 70, k: 130),
        .init(m: 17, n: 100, k: 512), .init(m: 64, n: 20, k: 33),
    ]

    static func randomMatrix(_ n: Int, _ k: Int, dtype: DType, seed: UInt64) -> (WeightMatrix, [Float]) {
        var g = SeededGenerator(seed: seed)
        let values = (0..<(n * k)).map { _ in Float(g.nextUnit() * 2 - 1) }
        let t = Tensor(shape: [n, k], values: values)
        let bytes = UnsafeMutableRawPointer.allocate(byteCount: max(1, n * k * dtype.byteSize), alignment: 64)
        Convert.fromFloat(t.data, count: n * k, dtype: dtype, into: bytes)
        let owner = RawOwner(bytes)
        let w = WeightMatrix(viewing: UnsafeRawPointer(bytes), dtype: dtype, rows: n, cols: k, owner: owner)
        // The values the kernel sees are the rounded ones.
        let rounded = Tensor(zeros: [n, k])
        Convert.toFloat(bytes, dtype: dtype, count: n * k, into: rounded.data)
        return (w, rounded.array)
    }

    static func randomInput(_ m: Int, _ k: Int, seed: UInt64) -> Tensor {
        var g = SeededGenerator(seed: seed)
        return Tensor(shape: [m, k], values: (0..<(m * k)).map { _ in Float(g.nextUnit() * 4 - 2) })
    }

    static func product(_ w: WeightMatrix, _ x: Tensor, parallel: Bool = false) -> [Float] {
        let y = Tensor(zeros: [x.rows, w.rows])
        w.multiply(x.data, m: x.rows, into: y.data, ldy: w.rows, parallel: parallel)
        return y.array
    }

    /// The documented order, restated: lane l sums k ≡ l (mod 16) with FMA, then pairs (i, i+8), (i, i+4), (i, i+2), (0, 1).
    static func specDot(_ x: ArraySlice<Float>, _ w: ArraySlice<Float>) -> Float {
        var lanes = [Float](repeating: 0, count: 16)
        let xs = Array(x), ws = Array(w)
        let steps = (xs.count + 15) / 16
        for s in 0..<steps {
            for l in 0..<16 {
                let i = 16 * s + l
                let a: Float = i < xs.count ? xs[i] : 0, b: Float = i < ws.count ? ws[i] : 0
                lanes[l] = lanes[l].addingProduct(a, b)
            }
        }
        var width = 8
        while width >= 1 {
            for i in 0..<width { lanes[i] = lanes[i] + lanes[i + width] }
            width /= 2
        }
        return lanes[0]
    }
}

/// The bf16/f16 weight kernels at the machine's best instruction set: accuracy against an f64 reference, accumulation,
/// the transposed product, and MOEPRESS_ISA's refusals. Each instruction set's own checks are in KernelISATests; these
/// are swift-testing tests in the same serialized suite (they set the process's instruction set too), so the one
/// summary line of `swift test` counts them.
extension KernelISATests {
    /// Guards against a kernel result further from the exact f64 sum than f32 rounding allows.
    @Test func accuracyAgainstFloat64() {
        KernelISA.use(.best)
        for dtype in [DType.bf16, .f16, .f32] {
            for (ci, c) in KernelData.cases.enumerated() {
                let (w, wv) = KernelData.randomMatrix(c.n, c.k, dtype: dtype, seed: UInt64(ci))
                let x = KernelData.randomInput(c.m, c.k, seed: UInt64(100 + ci))
                let y = KernelData.product(w, x)
                var worst: (excess: Double, at: String)? = nil
                for i in 0..<c.m {
                    for j in 0..<c.n {
                        var ref = 0.0, mag = 0.0
                        for t in 0..<c.k {
                            ref += Double(x.data[i * c.k + t]) * Double(wv[j * c.k + t])
                            mag += abs(Double(x.data[i * c.k + t]) * Double(wv[j * c.k + t]))
                        }
                        let excess = abs(Double(y[i * c.n + j]) - ref) - (4e-7 * mag + 1e-30)
                        if excess > 0 && excess > (worst?.excess ?? 0) { worst = (excess, "[\(i), \(j)]") }
                    }
                }
                #expect(worst == nil, "\(dtype) \(c) \(worst?.at ?? ""): beyond f32 rounding of the f64 sum")
            }
        }
    }

    /// Guards against a wrong accumulate-into product, or a transposed product (dx = dy · W) that disagrees with BLAS.
    @Test func accumulateAndTransposedProduct() {
        KernelISA.use(.best)
        let (w, wv) = KernelData.randomMatrix(24, 40, dtype: .bf16, seed: 11)
        let x = KernelData.randomInput(3, 40, seed: 12)
        let y = Tensor(shape: [3, 24], values: (0..<72).map { Float($0) })
        let fresh = KernelData.product(w, x)
        w.multiply(x.data, m: 3, into: y.data, ldy: 24, accumulate: true)
        #expect((0..<72).allSatisfy { y.data[$0] == Float($0) + fresh[$0] })
        // dx = dy · W against the widened matrix through BLAS.
        let dy = KernelData.randomInput(5, 24, seed: 13)
        let dx = Tensor(zeros: [5, 40])
        w.multiplyTransposed(dy.data, m: 5, into: dx.data, ldx: 40)
        let ref = matmul(dy, Tensor(shape: [24, 40], values: wv))
        #expect(dx.maxAbsDifference(ref) < 1e-5)
        #expect(w.float().array == wv)
    }

    /// Guards against MOEPRESS_ISA accepting a name it does not know, or ignoring one it does. The name is passed as
    /// `configureFromEnvironment` passes it, without setenv: CLI tests running meanwhile would hand it on to moepress.
    @Test func unknownInstructionSetIsRefused() {
        defer { KernelISA.use(.best) }
        #expect(KernelISA.configure(named: "sse9") != nil)
        #expect(KernelISA.configure(named: "portable") == nil)
        #expect(KernelISA.current == .portable)
        #expect(KernelISA.configure(named: "") == nil && KernelISA.current == .portable)
    }
}

/// Each instruction set's kernels as a test of its own, forced like MOEPRESS_ISA does: bit-identity with a Swift
/// restatement of the documented summation order, across batch sizes and thread splits, MXFP4 decoding as
/// transformers does it, and strided and MXFP4 products equal to the f32 kernel on their values. A set this CPU
/// cannot run is reported as skipped, with the reason (not passed unseen).
@Suite(.serialized) struct KernelISATests {
    /// Guards against an instruction set added to the kernels without a test here.
    @Test func everyInstructionSetHasATest() {
        #expect(KernelISA.allCases == [.portable, .avx2, .avx512])
        #expect(KernelISA.portable.isSupported)
    }

    /// Guards against the portable C kernels (every CPU's fallback) leaving the documented order or its invariances.
    @Test func portable() { Self.check(.portable) }

    /// Guards against the AVX2 kernels leaving the documented order or its invariances.
    @Test(.enabled(if: KernelISA.avx2.isSupported, "this CPU lacks AVX2 + FMA + F16C")) func avx2() { Self.check(.avx2) }

    /// Guards against the AVX-512 kernels leaving the documented order or its invariances.
    @Test(.enabled(if: KernelISA.avx512.isSupported, "this CPU lacks AVX-512 (F, BW, VL, DQ)")) func avx512() { Self.check(.avx512) }

    static func check(_ isa: KernelISA) {
        #expect(KernelISA.use(isa), "\(isa) refused")
        defer { KernelISA.use(.best) }
        matchesDocumentedOrder(isa)
        batchAndThreadInvariance(isa)
        mxfp4DecodesAsTransformersDoes(isa)
        stridedAndMXFP4ProductsEqualTheKernelOnTheirValues(isa)
    }

    static func matchesDocumentedOrder(_ isa: KernelISA) {
        for dtype in [DType.bf16, .f16, .f32] {
            for (ci, c) in KernelData.cases.enumerated() {
                let (w, wv) = KernelData.randomMatrix(c.n, c.k, dtype: dtype, seed: UInt64(7 + ci))
                let x = KernelData.randomInput(c.m, c.k, seed: UInt64(200 + ci))
                var spec = [Float]()
                for i in 0..<c.m {
                    for j in 0..<c.n {
                        spec.append(KernelData.specDot(x.array[(i * c.k)..<((i + 1) * c.k)], wv[(j * c.k)..<((j + 1) * c.k)]))
                    }
                }
                let y = KernelData.product(w, x)
                #expect(y.map(\.bitPattern) == spec.map(\.bitPattern), "\(isa) \(dtype) \(c)")
            }
        }
    }

    static func batchAndThreadInvariance(_ isa: KernelISA) {
        Compute.configure(threads: 2)
        let (w, _) = KernelData.randomMatrix(300, 256, dtype: .bf16, seed: 3)
        let x = KernelData.randomInput(37, 256, seed: 4)
        let all = KernelData.product(w, x, parallel: true)
        for i in [0, 5, 36] {
            let one = KernelData.product(w, x.rowSlice(i..<(i + 1)), parallel: false)
            #expect(one.map(\.bitPattern) == all[(i * 300)..<((i + 1) * 300)].map(\.bitPattern), "\(isa) row \(i)")
        }
        let some = KernelData.product(w, x.rowSlice(3..<10), parallel: true)
        #expect(some.map(\.bitPattern) == all[(3 * 300)..<(10 * 300)].map(\.bitPattern), "\(isa) rows 3..<10")
    }

    /// OCP MXFP4 as transformers' dequantiser reads it (its FP4_VALUES table, low nibble first, ldexp by scale − 127).
    static func mxfp4DecodesAsTransformersDoes(_ isa: KernelISA) {
        let fp4: [Float] = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6]
        var blocks = [UInt8](repeating: 0, count: 32), scales: [UInt8] = [127, 129]   // two blocks: ×1, ×4
        for j in 0..<64 where j % 2 == 0 { blocks[j / 2] = UInt8(j % 16) | UInt8(((j + 7) % 16) << 4) }
        // Whole blocks vectorised, edges element by element.
        var out = [Float](repeating: .nan, count: 64)
        mpk_mxfp4_to_f32(blocks, scales, 0, 64, &out)
        for j in 0..<64 {
            let code = j % 2 == 0 ? j % 16 : (j - 1 + 7) % 16
            #expect(out[j].bitPattern == (fp4[code] * (j < 32 ? 1 : 4)).bitPattern, "\(isa) element \(j)")
        }
        // Windows starting and ending mid-block.
        for (first, n) in [(31, 3), (5, 50), (1, 63)] {
            var part = [Float](repeating: .nan, count: n)
            mpk_mxfp4_to_f32(blocks, scales, first, n, &part)
            #expect(part.map(\.bitPattern) == out[first..<(first + n)].map(\.bitPattern), "\(isa) window \(first)+\(n)")
        }
        // The extreme exponents: 2^-127 (subnormal) and 255 (→ inf, as bf16 ldexp gives).
        var one = [Float](repeating: 0, count: 1)
        mpk_mxfp4_to_f32([0x02], [0], 0, 1, &one)
        #expect(one[0] == Float(sign: .plus, exponent: -127, significand: 1), "\(isa)")
        mpk_mxfp4_to_f32([0x02], [255], 0, 1, &one)
        #expect(one[0] == .infinity, "\(isa)")
    }

    /// A strided view (gpt-oss's gate: every other column of an input-major [k, 2n] bf16 tensor) and an MXFP4
    /// matrix multiply exactly as the f32 kernel does on the same values written out row-major, for every batch
    /// size and thread split; the input gradient matches BLAS on the widened matrix.
    static func stridedAndMXFP4ProductsEqualTheKernelOnTheirValues(_ isa: KernelISA) {
        Compute.configure(threads: 2)
        let n = 40, k = 96
        // [k, 2n] bf16, input-major; the gate is column 2o, the up column 2o + 1.
        let (stored, sv) = KernelData.randomMatrix(k, 2 * n, dtype: .bf16, seed: 21)
        var g = SeededGenerator(seed: 22)
        let codes = (0..<(n * k / 2)).map { _ in UInt8(g.nextUnit() * 256) }, exps = (0..<(n * k / 32)).map { _ in UInt8(120 + g.nextUnit() * 10) }
        let cb = UnsafeMutablePointer<UInt8>.allocate(capacity: codes.count), eb = UnsafeMutablePointer<UInt8>.allocate(capacity: exps.count)
        cb.initialize(from: codes, count: codes.count); eb.initialize(from: exps, count: exps.count)
        let mx = WeightMatrix(mxfp4Blocks: cb, scales: eb, rows: n, cols: k, owner: RawOwner(UnsafeMutableRawPointer(cb)))
        defer { eb.deallocate() }
        var mxValues = [Float](repeating: 0, count: n * k)
        for r in 0..<n { mpk_mxfp4_to_f32(cb + r * k / 2, eb + r * k / 32, 0, k, &mxValues[r * k]) }
        for (name, up) in [("gate", 0), ("up", 1)] {
            let view = stored.view(offset: up, rows: n, cols: k, rowStride: 2, colStride: 2 * n)
            let values = (0..<(n * k)).map { i in sv[(i % k) * 2 * n + 2 * (i / k) + up] }
            check(view, values, "\(isa) \(name)")
        }
        check(mx, mxValues, "\(isa) mxfp4")
        check(mx.rowSlice(8..<24), Array(mxValues[(8 * k)..<(24 * k)]), "\(isa) mxfp4 rows 8..<24")
        let t = stored.transposed()
        #expect(t.rows == 2 * n)
        #expect(t.float().array == (0..<(2 * n * k)).map { i in sv[(i % k) * 2 * n + i / k] })
    }

    private static func check(_ w: WeightMatrix, _ values: [Float], _ name: String) {
        let plain = WeightMatrix(Tensor(shape: [w.rows, w.cols], values: values))
        #expect(w.float().array == values, "\(name)")
        let x = KernelData.randomInput(9, w.cols, seed: 23)
        let want = KernelData.product(plain, x)
        #expect(KernelData.product(w, x, parallel: true).map(\.bitPattern) == want.map(\.bitPattern), "\(name)")
        let one = KernelData.product(w, x.rowSlice(4..<5))
        #expect(one.map(\.bitPattern) == want[(4 * w.rows)..<(5 * w.rows)].map(\.bitPattern), "\(name) one row")
        let dy = KernelData.randomInput(5, w.rows, seed: 24), dx = Tensor(zeros: [5, w.cols])
        w.multiplyTransposed(dy.data, m: 5, into: dx.data, ldx: w.cols)
        #expect(dx.maxAbsDifference(matmul(dy, Tensor(shape: [w.rows, w.cols], values: values))) < 1e-4, "\(name)")
    }
}

final class RawOwner {
    let p: UnsafeMutableRawPointer
    init(_ p: UnsafeMutableRawPointer) { self.p = p }
    deinit { p.deallocate() }
}
