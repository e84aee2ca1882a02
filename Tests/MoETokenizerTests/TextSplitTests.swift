import Foundation
import Testing
@testable import MoETokenizer

/// The split of calibration/training text into its training part and validation slice (issue 26 §2).
@Suite struct TextSplitTests {
    static func parts(_ s: String, lineOnly: Bool = false) -> (Data, Data) {
        let d = Data(s.utf8)
        return (TextSplit.slice(d, .training, lineOnly: lineOnly), TextSplit.slice(d, .validation, lineOnly: lineOnly))
    }

    /// The two parts are disjoint and together the file; the cut is at a line start near 90%, the same every time.
    @Test func disjointCompleteAtALineStart() throws {
        let lines = (0..<200).map { "line \($0) " + String(repeating: "x", count: $0 % 37) + "\n" }
        let text = lines.joined()
        let (train, val) = Self.parts(text)
        #expect(train + val == Data(text.utf8))
        #expect(!val.isEmpty && !train.isEmpty)
        #expect(train.last == 0x0A)   // the validation slice starts a line
        let share = Double(val.count) / Double(text.utf8.count)
        #expect(share > 0.08 && share < 0.12, "validation share \(share)")
        let again = Self.parts(text)
        #expect(again.0 == train && again.1 == val)
        // The nearest line start to 90%: no other line start is closer.
        let n = text.utf8.count, target = n - Int(Double(n) * TextSplit.validationFraction)
        var starts: [Int] = []
        var p = 0
        for l in lines { p += l.utf8.count; if p < n { starts.append(p) } }
        let best = starts.min { abs($0 - target) < abs($1 - target) }!
        #expect(abs(train.count - target) == abs(best - target))
    }

    /// One line: cut at a character boundary (never inside a UTF-8 sequence) for text; JSONL stays whole.
    @Test func oneLine() throws {
        let text = String(repeating: "é", count: 101)   // 202 bytes, 2 each
        let (train, val) = Self.parts(text)
        #expect(String(data: train, encoding: .utf8) != nil && String(data: val, encoding: .utf8) != nil)
        #expect(train + val == Data(text.utf8) && !val.isEmpty)
        let json = #"{"instruction": "a", "response": "b"}"# + "\n"
        let (jt, jv) = Self.parts(json, lineOnly: true)
        #expect(jt == Data(json.utf8) && jv.isEmpty)
        #expect(Self.parts("").0.isEmpty && Self.parts("").1.isEmpty)
    }

    /// `read` gives the parts of a file; JSONL files are cut at line starts only.
    @Test func readsFiles() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moepress-split-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let text = (0..<50).map { "sentence number \($0).\n" }.joined()
        let f = dir.appendingPathComponent("a.txt")
        try text.write(to: f, atomically: true, encoding: .utf8)
        let t = try TextSplit.read(f, .training), v = try TextSplit.read(f, .validation)
        #expect(t.text + v.text == text)
        #expect(v.text.hasPrefix("sentence number") && v.text.hasSuffix("49.\n"))
        #expect(try TextSplit.textFiles(in: dir) == [f])
        try Data([0xFF, 0xFE]).write(to: dir.appendingPathComponent("b.txt"))
        #expect(throws: DataFileError.self) { try TextSplit.read(dir.appendingPathComponent("b.txt"), .training) }
    }
}

/// Instruction JSONL: a field of the wrong type is refused with its file, line and key before any training starts.
@Suite struct InstructionFileTests {
    @Test func wrongTypesAreRefusedWithTheLine() throws {
        let good = #"{"instruction": "i", "input": "", "response": "r"}"#
        let cases: [(String, String)] = [
            (good + "\n" + #"{"instruction": ["i"], "response": "r"}"#, "data.jsonl:2: \"instruction\" should be a string, not a list"),
            (#"{"instruction": "i", "response": {"text": "r"}}"#, "data.jsonl:1: \"response\" should be a string, not an object"),
            (#"{"instruction": "i", "output": 3}"#, "data.jsonl:1: \"output\" should be a string, not a number"),
            (#"{"instruction": "i", "input": ["x"], "response": "r"}"#, "data.jsonl:1: \"input\" should be a string, not a list"),
            (#"{"instruction": "i", "response": "r", "response": "s"}"#, "appears twice"),
            (#"{"instruction": "i"}"#, "data.jsonl:1: expected a JSON object with string fields"),
            ("[1]", "data.jsonl:1: not a JSON object"),
        ]
        for (text, problem) in cases {
            do {
                _ = try InstructionExample.parse(text, path: "data.jsonl")
                Issue.record("accepted: \(text)")
            } catch let e as DataFileError {
                #expect(e.description.contains(problem), "\(e)")
            }
        }
        let ok = try InstructionExample.parse(good + "\n\n" + #"{"instruction": "i", "input": null, "output": "o"}"#, path: "data.jsonl")
        #expect(ok.count == 2 && ok[0].input == nil && ok[1].response == "o")
        // CRLF line ends (Swift's split on "\n" does not cut "\r\n").
        let crlf = try InstructionExample.parse(good + "\r\n" + good + "\r\n", path: "data.jsonl")
        #expect(crlf.count == 2 && crlf[1].source == "data.jsonl:2")
    }
}
