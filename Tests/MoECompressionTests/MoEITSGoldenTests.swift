import Foundation
import Testing
@testable import MoECompression

/// Golden vectors of methods.md §6 (numpy 2.4.6 / scipy 1.17.1, natural log).
@Suite struct MoEITSGoldenTests {
    func seq(_ n: Int, _ f: (Double) -> Double) -> [Double] { (0..<n).map { f(Double($0)) } }
    func nmi(_ a: [Double], _ b: [Double], rule: MoEITS.BinRule = .numpy23) -> (Double, MoEITS.Binned, MoEITS.Binned) {
        let ba = MoEITS.bin(a, rule: rule), bb = MoEITS.bin(b, rule: rule)
        var scratch: [Int32] = []
        return (MoEITS.nmi(ba, bb, scratch: &scratch), ba, bb)
    }

    @Test func g1IdenticalMatrices() {
        let a = seq(60) { 0.1 * sin($0) }
        let (v, ba, _) = nmi(a, a)
        #expect(ba.bins == 7)
        #expect(abs(ba.entropy - 1.857825) < 1e-6)
        #expect(abs(v - 1) < 1e-12)
    }

    @Test func g2AndG3() {
        let a = seq(60) { 0.1 * sin($0) }
        let (v2, _, b2) = nmi(a, seq(60) { 0.1 * sin($0) + 0.05 * cos(3 * $0) })
        #expect(abs(b2.entropy - 1.830961) < 1e-6)
        #expect(abs(v2 - 0.520722) < 1e-6)
        let (v3, _, b3) = nmi(a, seq(60) { 0.1 * cos(7 * $0) })
        #expect(abs(b3.entropy - 1.841649) < 1e-6)
        #expect(abs(v3 - 0.171147) < 1e-6)
    }

    @Test func g4BinRules() {
        let x1 = seq(10000) { 0.02 * sin(0.37 * $0) * cos(0.011 * $0) }
        var x2 = x1
        for t in stride(from: 0, to: 10000, by: 997) { x2[t] = 0.5 }
        #expect(MoEITS.autoBins(x1, rule: .numpy23).bins == 30 && MoEITS.autoBins(x1, rule: .legacy).bins == 30)
        #expect(MoEITS.autoBins(x2, rule: .numpy23).bins == 200)
        #expect(MoEITS.autoBins(x2, rule: .legacy).bins == 388)
        let (v, a, b) = nmi(x1, x2)
        #expect(abs(a.entropy - 3.340718) < 1e-6 && abs(b.entropy - 2.695120) < 1e-6)
        #expect(abs(v - 0.798808) < 1e-6)
        let (v3, _, b3) = nmi(x1, seq(10000) { 0.02 * cos(0.53 * $0) })
        #expect(b3.bins == 16)
        #expect(abs(v3 - 0.011260) < 1e-6)
    }

    @Test func g5SimplifyLayer() {
        let m: [[Double]] = [[0.0, 0.18764224895310502, 0.1898377800523764, 0.55, 0.24286553506815262, 0.2601202307848662], [0.18764224895310502, 0.0, 0.15772105667708872, 0.23577596449854266, 0.9, 0.1391659924149252], [0.1898377800523764, 0.15772105667708872, 0.0, 0.1203975291748022, 0.28603888581390974, 0.7], [0.55, 0.23577596449854266, 0.1203975291748022, 0.0, 0.26514597534698603, 0.23686778517683316], [0.24286553506815262, 0.9, 0.28603888581390974, 0.26514597534698603, 0.0, 0.21758135987435423], [0.2601202307848662, 0.1391659924149252, 0.7, 0.23686778517683316, 0.21758135987435423, 0.0]]
        #expect(MoEITS.simplify(m, tau: 0.5) == [1, 2, 3])
        #expect(MoEITS.simplify(m, tau: 1.25) == [1, 2, 3])
        #expect(MoEITS.simplify(m, tau: 2.5) == [0, 1, 2, 3])
        #expect(MoEITS.simplify(m, tau: 5.0) == [0, 1, 2, 3, 5])
        // Fixed-count mode follows the same greedy order.
        #expect(MoEITS.simplify(m, keep: 4) == [0, 1, 2, 3])
        let all = m.flatMap { $0 }.sorted()
        #expect(abs(all.reduce(0, +) / 36 - 0.260509) < 1e-6)
        #expect(abs(MoEITS.percentile(all, 75) - MoEITS.percentile(all, 25) - 0.125980) < 1e-6)
    }
}
