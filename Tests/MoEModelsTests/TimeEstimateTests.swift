import Foundation
import Testing
import MoETensor
@testable import MoEModels

/// The time estimates printed before heavy work: the arithmetic of a pass from the probe's measurement
/// (checked by hand), and the estimate a stage makes from its first items.
@Suite struct TimeEstimateTests {
    // One layer: 100 tokens in 0.5 s resident; weights read at 1000 bytes/s; 3 layers of 2000 bytes, ends 1000.
    let probe = ForwardProbe(tokens: 100, computeSeconds: 0.5, readBytesPerSecond: 1000, layerBytes: [2000, 2000, 2000], otherBytes: 1000)

    @Test func inMemoryPassesReadTheWeightsOnce() {
        // 2 passes × 3 layers × (400 tokens: 2 s) + 7000 bytes read once (7 s).
        #expect(abs(probe.seconds(tokens: 400, passes: 2, streams: false) - 19) < 1e-9)
        // Training's factor scales compute only: 2 × 3 × 2 s × 4 + 7 s.
        #expect(abs(probe.seconds(tokens: 400, passes: 2, computeFactor: 4, streams: false) - 55) < 1e-9)
    }

    @Test func streamingPassesPayTheSlowerOfReadAndCompute() {
        // Read-bound: each layer reads 2 s, computes 0.5 s (100 tokens); ends 1 s: 1 + 3 × 2 = 7 s a pass.
        #expect(abs(probe.seconds(tokens: 100, passes: 3, streams: true) - 21) < 1e-9)
        // Compute-bound: 1000 tokens compute 5 s a layer: 1 + 3 × 5 = 16 s.
        #expect(abs(probe.seconds(tokens: 1000, streams: true) - 16) < 1e-9)
        // Two reads a pass (training's forward and backward): 2 + 3 × max(5, 4) = 17 s.
        #expect(abs(probe.seconds(tokens: 1000, readsPerPass: 2, streams: true) - 17) < 1e-9)
    }

    @Test func aMeasuredProbeGivesAFiniteEstimate() throws {
        let model = try ModelRegistry.load(directory: Paths.sharedModel("qwen-moe-ref"))
        let windows = (0..<4).map { w in (0..<128).map { (w * 131 + $0 * 7) % model.vocabSize } }
        let p = ForwardProbe.measure(model, windows: windows)
        // The probe takes whole windows until every expert could see 32 tokens (32 experts, top-4: 256 → 2 windows).
        #expect(p.tokens == 256)
        #expect(p.computeSeconds > 0 && p.computeSeconds < 60)
        let s = p.seconds(tokens: 4096, streams: false)
        #expect(s.isFinite && s > 0)
    }

    @Test func aStageEstimatesItselfFromItsFirstTenth() {
        let name = "estimate-test-\(UUID().uuidString)"
        let progress = StageProgress(name, total: 20, unit: "items", quiet: true)
        progress.advance()
        #expect(!ResourceMonitor.shared.estimates.contains { $0.name == name })
        usleep(100_000)
        progress.advance()
        let e = ResourceMonitor.shared.estimates.filter { $0.name == name }
        #expect(e.count == 1)
        // 20 items timed from the first 2 (≥ 0.1 s): ten times their elapsed time, so at least 1 s.
        #expect(e.first.map { $0.seconds >= 1 && $0.seconds < 60 } ?? false, "\(e)")
        for _ in 0..<18 { progress.advance() }
        #expect(ResourceMonitor.shared.estimates.filter { $0.name == name }.count == 1)
    }
}
