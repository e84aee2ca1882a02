import Foundation
import Testing
import MoETokenizer
import MoECalibration

/// Calibration never reads a byte of the validation slice (`TextSplit`, issue 26 §2).
@Suite struct CalibrationSplitTests {
    /// Two real calibration-style files, a few hundred lines each.
    static func folder() throws -> URL {
        let dir = Where.temp("split")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for name in ["kjv.txt", "pydoc.txt"] {
            let text = try String(contentsOf: Where.shared.appendingPathComponent("data/calib/\(name)"), encoding: .utf8)
            try (text.split(separator: "\n", omittingEmptySubsequences: false).prefix(300).joined(separator: "\n") + "\n")
                .write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        return dir
    }

    /// Every calibration window is a contiguous run of the training parts' token stream (so none holds a
    /// token of a validation slice), and the windows reach the end of that stream (a loader reading whole
    /// files would put windows across the cut, which this catches).
    @Test func windowsComeFromTheTrainingPartOnly() throws {
        let dir = try Self.folder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let tok = try MoETokenizerShim.tokenizer(Where.shared.appendingPathComponent("models/mixtral-ref"))
        let files = try Calibration.files(in: dir)
        let stream = try files.flatMap { try tok.encode(TextSplit.read($0, .training).text) }
        let validation = try files.flatMap { try tok.encode(TextSplit.read($0, .validation).text) }
        #expect(validation.count > 100)
        let seqLen = 24
        let (windows, _) = try Calibration.sample(files: files, tokenizer: tok, samples: 400, seqLen: seqLen, seed: 3)
        var latest = 0
        for w in windows {
            let start = (0...(stream.count - seqLen)).first { s in stream[s] == w[0] && Array(stream[s..<(s + seqLen)]) == w }
            #expect(start != nil, "a calibration window is not in the training part")
            latest = max(latest, start ?? 0)
        }
        #expect(latest > stream.count - 4 * seqLen, "windows should reach the end of the training part")
        // The data hash is over the parts read: a change in a validation slice changes no calibration.
        let (w1, h1) = try Calibration.sample(files: files, tokenizer: tok, samples: 8, seqLen: seqLen, seed: 1)
        let f = files[0]
        let whole = try Data(contentsOf: f)
        let cut = TextSplit.boundary(whole)
        // Same length and line starts (so the same cut), other letters in the validation slice.
        try (whole.prefix(cut) + Data(whole.suffix(from: cut).map { $0 == UInt8(ascii: "e") ? UInt8(ascii: "q") : $0 })).write(to: f)
        #expect(try Data(contentsOf: f) != whole)
        #expect(TextSplit.boundary(try Data(contentsOf: f)) == cut)
        let (w2, h2) = try Calibration.sample(files: files, tokenizer: tok, samples: 8, seqLen: seqLen, seed: 1)
        #expect(w1 == w2 && h1 == h2)
    }
}
