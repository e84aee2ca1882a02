import Foundation
import Testing
import MoETensor
import MoEModels
@testable import MoEEval

/// The benchmark protocol's statistic and round order (BENCHMARKS.md, "Protocol"). Nothing here depends on timing.
@Suite struct SpeedProtocolTests {
    @Test func summaryOfAnOddCount() throws {
        let s = try #require(Speed.Summary([5, 1, 4, 2, 3]))
        #expect(s == Speed.Summary(median: 3, min: 1, max: 5))
    }

    @Test func summaryOfAnEvenCountAveragesTheMiddleTwo() throws {
        let s = try #require(Speed.Summary([10, 1, 4, 2]))
        #expect(s == Speed.Summary(median: 3, min: 1, max: 10))
        #expect(Speed.Summary([7]) == Speed.Summary(median: 7, min: 7, max: 7))
        #expect(Speed.Summary([]) == nil)
    }

    @Test func timesBecomeRatesWithMinAndMaxSwapped() throws {
        // 8 tokens in 1, 2 and 4 s: 8, 4 and 2 tok/s; the slowest round is the min rate.
        let s = try #require(Speed.Summary([4, 1, 2])).reciprocal(8)
        #expect(s == Speed.Summary(median: 4, min: 2, max: 8))
        #expect(try #require(Speed.Summary([0.5, 0.25])).scaled(1000) == Speed.Summary(median: 375, min: 250, max: 500))
    }

    @Test func roundsAlternateOverTheItems() {
        var calls: [String] = []
        var counter = 0
        let samples = Speed.alternate(rounds: 3, count: 2) { r, i -> Int in
            calls.append("\(["A", "B"][i])\(r)")
            counter += 1
            return counter
        }
        #expect(calls == ["A0", "B0", "A1", "B1", "A2", "B2"])
        // Each item's samples in round order: A got the 1st, 3rd and 5th ticks of the counter.
        #expect(samples == [[1, 3, 5], [2, 4, 6]])
        #expect(Speed.alternate(rounds: 0, count: 2) { _, _ in 0 } == [[], []])
    }

    @Test func measureTimesTheModelsInAlternatingRounds() throws {
        let (model, _) = try EvalPaths.load("mixtral-ref")
        var order: [[Int]] = []
        let results = Speed.measure([model, model], tokens: 4, decode: 2, rounds: 3) { r, i in order.append([r, i]) }
        #expect(order == [[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1]])
        #expect(results.count == 2)
        for r in results {
            #expect(r.rounds == 3)
            for s in [r.prefill, r.timeToFirstToken, r.decode] { #expect(s.min <= s.median && s.median <= s.max && s.min > 0) }
            // The names the run report reads are the medians.
            #expect(r.prefillTokensPerSecond == r.prefill.median && r.decodeTokensPerSecond == r.decode.median)
            #expect(r.timeToFirstTokenMs == r.timeToFirstToken.median)
        }
    }

    @Test func machineLineNamesTheCPUAndItsFlags() {
        let cpuinfo = """
        processor\t: 0
        model name\t: Test CPU 9000
        flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 amx_tile amx_bf16
        processor\t: 1
        model name\t: Test CPU 9000
        """
        let m = Speed.Machine(readGBPerSecond: 25.04, cpuinfo: cpuinfo, commit: "abc1234", date: Date(timeIntervalSince1970: 0))
        #expect(m.cpu == "Test CPU 9000")
        #expect(m.flags == ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"])
        #expect(m.line.hasPrefix("machine: Test CPU 9000 (avx2 avx512f avx512_bf16 amx_bf16 amx_tile) · MoEPress kernels "))
        #expect(m.line.contains("read bandwidth 25.0 GB/s") && m.line.contains("1970-01-01") && m.line.hasSuffix("commit abc1234"))
        let plain = Speed.Machine(readGBPerSecond: 10, cpuinfo: "model name : Old\nflags : sse2 avx2\n", commit: nil)
        #expect(plain.line.contains("(avx2, no amx)") && plain.line.hasSuffix("commit unknown"))
    }
}
