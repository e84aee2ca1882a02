import Foundation
import Testing
@testable import MoETensor

/// Expected values computed by torch (tools/oracle/make_op_fixtures.py).
struct OpsFixture: Decodable {
    struct Rope: Decodable {
        let params: [String: Param]
        let inv_freq: [Float]
        let attention_factor: Double
        let cos: [Float]
        let sin: [Float]
    }
    enum Param: Decodable {
        case number(Double), text(String)
        init(from d: any Decoder) throws {
            let c = try d.singleValueContainer()
            if let v = try? c.decode(Double.self) { self = .number(v) } else { self = .text(try c.decode(String.self)) }
        }
        var number: Double? { if case .number(let v) = self { return v } else { return nil } }
        var text: String? { if case .text(let v) = self { return v } else { return nil } }
    }
    let x: [Float], norm_weight: [Float], layernorm_bias: [Float]
    let rmsnorm: [Float], layernorm: [Float], softmax: [Float], silu: [Float], gelu: [Float], gelu_tanh: [Float], sigmoid: [Float]
    let topk4_values: [Float], topk4_indices: [Int]
    let probe: [Float], probe16: [Float], probe_bf16_bits: [Int], probe_bf16_back: [Float], probe_f16_back: [Float]
    let rope: [String: Rope]

    static let shared: OpsFixture = {
        let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("ops.json")
        return try! JSONDecoder().decode(OpsFixture.self, from: Data(contentsOf: url))
    }()
}

func maxRelError(_ a: [Float], _ b: [Float], floor: Float = 1e-6) -> Float {
    precondition(a.count == b.count, "\(a.count) vs \(b.count)")
    return zip(a, b).map { abs($0 - $1) / max(abs($1), floor) }.max() ?? 0
}

@Suite struct ElementwiseOpsTests {
    let f = OpsFixture.shared
    var x: Tensor { Tensor(shape: [3, 10], values: f.x) }

    @Test func rmsNormMatchesTorch() {
        let y = rmsNorm(x, weight: Tensor(shape: [10], values: f.norm_weight), eps: 1e-6)
        #expect(maxRelError(y.array, f.rmsnorm) < 1e-5)
    }

    @Test func layerNormMatchesTorch() {
        let y = layerNorm(x, weight: Tensor(shape: [10], values: f.norm_weight), bias: Tensor(shape: [10], values: f.layernorm_bias), eps: 1e-5)
        #expect(zip(y.array, f.layernorm).allSatisfy { abs($0 - $1) < 1e-5 })
    }

    @Test func softmaxAndActivationsMatchTorch() {
        #expect(maxRelError(softmax(x).array, f.softmax) < 1e-5)
        #expect(zip(f.x.map { Activation.silu($0) }, f.silu).allSatisfy { abs($0 - $1) < 1e-6 })
        #expect(zip(f.x.map { Activation.gelu($0) }, f.gelu).allSatisfy { abs($0 - $1) < 1e-6 })
        #expect(zip(f.x.map { Activation.geluTanh($0) }, f.gelu_tanh).allSatisfy { abs($0 - $1) < 1e-6 })
        #expect(zip(f.x.map { sigmoid($0) }, f.sigmoid).allSatisfy { abs($0 - $1) < 1e-6 })
    }

    @Test func topKMatchesTorchOrder() {
        for r in 0..<3 {
            let top = f.x.withUnsafeBufferPointer { topK($0.baseAddress! + r * 10, count: 10, k: 4) }
            #expect(top.map(\.index) == Array(f.topk4_indices[(r * 4)..<(r * 4 + 4)]))
            #expect(top.map(\.value) == Array(f.topk4_values[(r * 4)..<(r * 4 + 4)]))
        }
    }

    @Test func unknownActivationIsAnError() {
        #expect(throws: TensorError.self) { try Activation(hfName: "swiglu_banana") }
    }
}

@Suite struct ConversionTests {
    let f = OpsFixture.shared

    @Test func bf16RoundsLikeTorch() {
        let bits = f.probe.map { Int(Convert.floatToBF16($0)) }
        #expect(bits == f.probe_bf16_bits)
        #expect(f.probe_bf16_bits.map { Convert.bf16ToFloat(UInt16($0)) } == f.probe_bf16_back)
    }

    @Test func bulkWideningMatchesScalar() {
        // 37 values: exercises the 8-wide path and the scalar tail, from an odd (unaligned) address.
        let values = (0..<37).map { Float($0) * 0.37 - 5 }
        var raw = [UInt8](repeating: 0, count: 1 + 37 * 2)
        for (i, v) in values.enumerated() {
            let b = Convert.floatToBF16(v)
            raw[1 + 2 * i] = UInt8(b & 0xFF)
            raw[2 + 2 * i] = UInt8(b >> 8)
        }
        let t = raw.withUnsafeBytes { Tensor(converting: $0.baseAddress! + 1, dtype: .bf16, shape: [37]) }
        #expect(t.array == values.map { Convert.bf16ToFloat(Convert.floatToBF16($0)) })
        let h = values.map { Float16($0) }
        let t16 = h.withUnsafeBytes { Tensor(converting: $0.baseAddress!, dtype: .f16, shape: [37]) }
        #expect(t16.array == h.map { Float($0) })
    }

    @Test func f16RoundsLikeTorch() {
        #expect(f.probe16.map { Float(Float16($0)) } == f.probe_f16_back)
    }
}

@Suite struct RoPETests {
    @Test(arguments: ["default", "linear", "yarn", "yarn_plain", "llama3"])
    func frequenciesMatchTransformers(_ name: String) throws {
        let r = OpsFixture.shared.rope[name]!
        var p = RoPE.Parameters()
        p.type = r.params["rope_type"]!.text!
        p.theta = r.params["rope_theta"]!.number!
        p.factor = r.params["factor"]?.number
        p.originalMaxPositions = r.params["original_max_position_embeddings"]?.number.map { Int($0) }
        p.betaFast = r.params["beta_fast"]?.number
        p.betaSlow = r.params["beta_slow"]?.number
        p.mscale = r.params["mscale"]?.number
        p.mscaleAllDim = r.params["mscale_all_dim"]?.number
        p.lowFreqFactor = r.params["low_freq_factor"]?.number
        p.highFreqFactor = r.params["high_freq_factor"]?.number
        let rope = try RoPE(p, headDim: 64, maxPositions: 163840)
        #expect(maxRelError(rope.invFreq, r.inv_freq) < 2e-6)
        #expect(abs(Double(rope.attentionScaling) - r.attention_factor) < 1e-6)
        let table = rope.table(positions: [0, 1, 7, 1000])
        #expect(zip(table.cos, r.cos).allSatisfy { abs($0 - $1) < 2e-5 })
        #expect(zip(table.sin, r.sin).allSatisfy { abs($0 - $1) < 2e-5 })
    }

    /// Rotating a vector by position p then reading it against one rotated by q depends only on p − q.
    @Test func rotationIsRelative() throws {
        let rope = try RoPE(RoPE.Parameters(), headDim: 8, maxPositions: 64)
        for interleaved in [false, true] {
            let r = RoPE(invFreq: rope.invFreq, interleaved: interleaved)
            func dot(_ p: Int, _ q: Int) -> Float {
                let a = Tensor(shape: [1, 8], values: [1, 2, 3, 4, -1, 0.5, 2, -3])
                let b = Tensor(shape: [1, 8], values: [0.3, -1, 2, 1, 1, 1, -2, 0.5])
                r.apply(a.data, tokens: 1, heads: 1, tokenStride: 8, headStride: 8, table: r.table(positions: [p]))
                r.apply(b.data, tokens: 1, heads: 1, tokenStride: 8, headStride: 8, table: r.table(positions: [q]))
                return zip(a.array, b.array).map(*).reduce(0, +)
            }
            #expect(abs(dot(5, 2) - dot(13, 10)) < 1e-4)
        }
    }

    @Test func unsupportedTypeIsAnError() {
        var p = RoPE.Parameters()
        p.type = "longrope"
        #expect(throws: TensorError.self) { try RoPE(p, headDim: 8, maxPositions: 64) }
    }
}

@Suite struct VectorMathTests {
    /// The vectorised exp against the libm one over the whole useful range, in ulps.
    @Test func expWithinTwoUlp() {
        var worst: Float = 0, worstAt: Float = 0
        var x: Float = -87
        while x < 88.5 {
            let v = VectorMath.exp(SIMD8<Float>((0..<8).map { x + Float($0) * 0.0013 }))
            for j in 0..<8 {
                let want = Float(Foundation.exp(Double(x + Float(j) * 0.0013)))
                let e = abs(v[j] - want) / want.ulp; if e > worst { worst = e; worstAt = x + Float(j) * 0.0013 }
            }
            x += 0.0917
        }
        #expect(worst <= 2, "worst error \(worst) ulp at \(worstAt)")
        let edges = VectorMath.exp(SIMD8<Float>(-.infinity, -100, 0, 1, 100, .infinity, -87.3, 88.7))
        #expect(edges[0] == 0 && edges[1] == 0 && edges[2] == 1 && abs(edges[3] - 2.7182817) < 3e-7)
        #expect(edges[4] == .infinity && edges[5] == .infinity && edges[6] > 0 && edges[7].isFinite)
    }

    @Test func softmaxHandlesTailsAndMasks() {
        // A fully masked row gives zeros (torch gives NaN; no caller may depend on either).
        var masked: [Float] = [-.infinity, -.infinity]
        masked.withUnsafeMutableBufferPointer { softmaxInPlace($0.baseAddress!, count: 2) }
        #expect(masked == [0, 0])
        for n in [2, 5, 8, 13, 37] {
            var x = (0..<n).map { Float($0 % 7) - 3 }
            x[0] = -.infinity
            let want: [Float] = {
                let m = x.max()!
                let e = x.map { Float(Foundation.exp(Double($0 - m))) }
                let s = e.reduce(0, +)
                return e.map { $0 / s }
            }()
            x.withUnsafeMutableBufferPointer { softmaxInPlace($0.baseAddress!, count: n) }
            #expect(x[0] == 0)
            #expect(zip(x, want).allSatisfy { abs($0 - $1) < 1e-6 }, "n = \(n): \(x) vs \(want)")
        }
    }
}
