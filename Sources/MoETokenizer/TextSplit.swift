import Foundation

/// The one split of calibration and training text into the part methods may read and a validation slice they
/// never read (issue 26 §2: tuning is scored on data training never saw; `../shared/data/dev` and the tasks are
/// read only by the final evaluation).
///
/// Every file is cut in two at `boundary(_:)`: the **training** part is the bytes before it (about the first
/// 90%), the **validation** slice the bytes from it to the end (about the last 10%). The cut is at the start of
/// a line: the line start nearest to 90% of the file's bytes (the later one on a tie); a file without any
/// line start after its first byte (one line) is cut at the first UTF-8 character boundary at or after 90%
/// (`.txt` only; a one-line JSONL file stays whole in the training part, its validation slice empty). The cut
/// depends on the bytes alone, so it is the same on every run and machine, and the two parts are disjoint and
/// together are the file. Calibration windows (`Calibration.sample`), training data (`TrainingData`, so `heal`,
/// `compress-experts` and recipe stages) read `.training`; `eval perplexity --validation-of` and the
/// validation loss `heal` prints read `.validation`.
public enum TextSplit {
    public enum Part: String, Sendable, Codable { case training, validation }

    /// The share of each file's bytes held out as the validation slice (before moving the cut to a line start).
    public static let validationFraction = 0.1

    /// The byte offset where the validation slice starts. `lineOnly` (JSONL, one example a line) never cuts
    /// inside a line.
    public static func boundary(_ bytes: some Collection<UInt8>, lineOnly: Bool = false) -> Int {
        let b = Array(bytes)
        let n = b.count
        guard n > 1 else { return n }
        let target = n - Int(Double(n) * validationFraction)   // ≈ 90%, at least 1 byte held out for n ≥ 10
        // The nearest line start p (0 < p < n, b[p − 1] = '\n') to the target.
        var after: Int? = nil
        var p = max(1, target)
        while p < n { if b[p - 1] == 0x0A { after = p; break }; p += 1 }
        var before: Int? = nil
        p = min(target, n - 1)
        while p >= 1 { if b[p - 1] == 0x0A { before = p; break }; p -= 1 }
        switch (before, after) {
        case let (bf?, af?): return (target - bf) < (af - target) ? bf : af
        case let (bf?, nil): return bf
        case let (nil, af?): return af
        case (nil, nil):
            if lineOnly { return n }
            var c = target
            while c < n && (b[c] & 0xC0) == 0x80 { c += 1 }   // not inside a UTF-8 sequence
            return c
        }
    }

    /// `part` of the bytes of a file's content.
    public static func slice(_ data: Data, _ part: Part, lineOnly: Bool = false) -> Data {
        let cut = boundary(data, lineOnly: lineOnly)
        let start = data.startIndex
        return part == .training ? data.subdata(in: start..<(start + cut)) : data.subdata(in: (start + cut)..<data.endIndex)
    }

    /// `part` of a file: its bytes and their UTF-8 text. JSONL files (`.jsonl`) are cut at line starts only.
    public static func read(_ url: URL, _ part: Part) throws -> (data: Data, text: String) {
        guard let data = FileManager.default.contents(atPath: url.path), String(data: data, encoding: .utf8) != nil else {
            throw DataFileError("\(url.path): cannot read as UTF-8 text")
        }
        let s = slice(data, part, lineOnly: url.pathExtension == "jsonl")
        guard let text = String(data: s, encoding: .utf8) else { throw DataFileError("\(url.path): cannot read as UTF-8 text") }
        return (s, text)
    }

    /// The `.txt` files of a folder, sorted by name (the files a validation slice of a folder is made of).
    public static func textFiles(in dir: URL) throws -> [URL] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDir), isDir.boolValue else {
            throw DataFileError("\(dir.path): not a folder of text files")
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".txt") }.sorted()
        guard !names.isEmpty else { throw DataFileError("\(dir.path): no .txt files") }
        return names.map { dir.appendingPathComponent($0) }
    }
}
