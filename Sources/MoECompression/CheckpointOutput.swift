import Foundation
import MoECheckpoint

/// What every compression writer does around its tensors: copy the model's companion files, write its own
/// JSON record, and record itself in config.json's "moepress" section without touching anything else.
public enum CheckpointOutput {
    static let companions = ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json", "plan.json", HFRemoteCode.fileName]

    static func copyCompanions(from dir: URL, to out: AtomicDirectory) throws {
        for name in companions {
            let src = dir.appendingPathComponent(name)
            // A file the writer already put there (its own remote code) wins over the source's copy.
            if FileManager.default.fileExists(atPath: src.path) && !FileManager.default.fileExists(atPath: out.url(name).path) {
                try FileManager.default.copyItem(at: src, to: out.url(name))
            }
        }
    }

    static func writeJSON<T: Encodable>(_ value: T, to url: URL) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try enc.encode(value).write(to: url)
    }

    /// config.json text with `"key": json` set inside the "moepress" object (created at the end when absent).
    /// Edited as text so every other value keeps its exact spelling (transformers v5 refuses `0` for `0.0`).
    public static func settingMoEPressEntry(_ text: String, key: String, json: String) -> String {
        var text = text
        let entry = "\"\(key)\": \(json)"
        let open = try! NSRegularExpression(pattern: "\"moepress\"\\s*:\\s*\\{")
        func section() -> NSRange? { open.firstMatch(in: text, range: NSRange(text.startIndex..., in: text))?.range }
        // Drop an earlier value of the same key: MoEPress writes a flat list, a flat object or null. Its separator
        // goes with it: the comma after it, or before it when it is the section's last entry (no trailing comma),
        // whatever the whitespace (a section pretty-printed by another tool).
        let value = "\"\(key)\"\\s*:\\s*(\\[[^\\]]*\\]|\\{[^{}]*\\}|null)"
        if let s = section() {
            for pattern in [value + "\\s*,\\s*", "\\s*,\\s*" + value + "(?=\\s*\\})", value] {
                guard let re = try? NSRegularExpression(pattern: pattern) else { continue }
                let from = NSRange(location: s.location + s.length, length: (text as NSString).length - s.location - s.length)
                if let m = re.firstMatch(in: text, range: from) { text = (text as NSString).replacingCharacters(in: m.range, with: ""); break }
            }
        }
        if let s = section() {
            let after = (text as NSString).substring(from: s.location + s.length)
            let empty = after.first { !$0.isWhitespace } == "}"
            text = (text as NSString).replacingCharacters(in: s, with: "\"moepress\": {" + entry + (empty ? "" : ", "))
        } else if let close = text.lastIndex(of: "}") {
            var head = String(text[..<close])
            while head.last?.isWhitespace == true { head.removeLast() }
            text = head + ",\n  \"moepress\": {" + entry + "}\n}\n"
        }
        return text
    }

    /// config.json text without the "moepress" entry `key`; an emptied "moepress" object goes too.
    public static func removingMoEPressEntry(_ text: String, key: String) -> String {
        var text = settingMoEPressEntry(text, key: key, json: "null")
        text = text.replacingOccurrences(of: "\"\(key)\": null, ", with: "").replacingOccurrences(of: "\"\(key)\": null", with: "")
        if let re = try? NSRegularExpression(pattern: ",\\s*\"moepress\"\\s*:\\s*\\{\\s*\\}") {
            text = re.stringByReplacingMatches(in: text, range: NSRange(text.startIndex..., in: text), withTemplate: "")
        }
        return text
    }
}
