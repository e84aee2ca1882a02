import Foundation
import Testing
@testable import MoETokenizer

@Suite struct MalformedTokenizerTests {
    static let base = #"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}"#

    static let cases: [(String, String, String)] = [
        ("not JSON", #"{"model": "#, "not valid JSON"),
        ("not an object", #"[1, 2]"#, "not a JSON object"),
        ("missing model", #"{"normalizer": null}"#, "has no \"model\""),
        ("unsupported model", #"{"model": {"type": "Unigram", "vocab": []}}"#, "unsupported model \"Unigram\""),
        ("merge names unknown token", #"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a c"]}}"#, "merge names unknown token \"c\""),
        ("merged token missing", #"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}}"#, "merged token \"ab\" is not in the vocabulary"),
        ("vocab id of wrong type", #"{"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}}"#, "is not a non-negative integer"),
        ("merges of wrong type", #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [42]}}"#, "merge should be"),
        ("bad regex", #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(ab"}, "behavior": "Isolated"}}"#, "missing ')'"),
        ("unsupported regex feature", #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(?<=a)b"}, "behavior": "Isolated"}}"#, "lookbehind"),
        ("unknown split behavior", #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "Sideways"}}"#, "unknown behavior"),
        ("unsupported normalizer", #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "normalizer": {"type": "Precompiled"}}"#, "unsupported normalizer \"Precompiled\""),
        ("unsupported decoder", #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "decoder": {"type": "CTC"}}"#, "unsupported decoder \"CTC\""),
        ("bool of wrong type", #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "byte_fallback": "yes"}}"#, "$.model.byte_fallback: should be true or false"),
        ("unk token missing from vocab", #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "unk_token": "<unk>"}}"#, "unk_token"),
        ("added token with a negative id", #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "added_tokens": [{"id": -5, "content": "x"}]}"#, "added_tokens[0].id: should be a token id"),
        ("added token id beyond u32", #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "added_tokens": [{"id": 5000000000, "content": "x"}]}"#, "added_tokens[0].id: should be a token id"),
        ("added token without id", #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "added_tokens": [{"content": "x"}]}"#, "added_tokens[0].id: missing"),
        ("template with unknown special", #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}], "special_tokens": {}}}"#, "special token \"<s>\""),
    ]

    @Test(arguments: cases.indices)
    func rejected(_ i: Int) {
        let (label, json, problem) = Self.cases[i]
        do {
            _ = try Tokenizer(data: Data(json.utf8), source: "tok.json")
            Issue.record("\(label): accepted")
        } catch let e as TokenizerError {
            #expect(e.file == "tok.json")
            #expect(e.description.contains(problem), "\(label): \(e)")
        } catch {
            Issue.record("\(label): unexpected \(error)")
        }
    }

    /// tokenizer.json options HF tokenizers refuses (serde types, onig's pattern errors) are refused here too, each
    /// class with several inputs (issue: reliability II).
    static let optionCases: [(String, String, String)] = {
        let m = #""model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}"#
        func split(_ re: String) -> String { #"{\#(m), "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\#(re)"}, "behavior": "Isolated"}}"# }
        func template(_ seq: String) -> String {
            #"{\#(m), "post_processor": {"type": "TemplateProcessing", "single": [\#(seq)], "special_tokens": {}}}"#
        }
        return [
            ("dropout", #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "dropout": -1}}"#, "dropout: should be a number from 0 to 1"),
            ("dropout", #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "dropout": 1.5}}"#, "dropout: should be a number from 0 to 1"),
            ("dropout", #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "dropout": "x"}}"#, "dropout: should be a number from 0 to 1"),
            ("truncation", #"{\#(m), "truncation": {"max_length": -1, "stride": 0, "strategy": "LongestFirst", "direction": "Right"}}"#, "truncation.max_length"),
            ("truncation", #"{\#(m), "truncation": {"max_length": 8, "strategy": "Middle"}}"#, "truncation.strategy"),
            ("truncation", #"{\#(m), "truncation": {"max_length": 8, "stride": 1.5}}"#, "truncation.stride"),
            ("truncation", #"{\#(m), "truncation": "x"}"#, "truncation: should be an object"),
            ("padding", #"{\#(m), "padding": "x"}"#, "padding: should be an object"),
            ("padding", #"{\#(m), "padding": {"strategy": "Widest"}}"#, "padding.strategy"),
            ("padding", #"{\#(m), "padding": {"strategy": {"Fixed": -4}}}"#, "padding.strategy.Fixed"),
            ("padding", #"{\#(m), "padding": {"strategy": "BatchLongest", "pad_id": -1}}"#, "padding.pad_id"),
            ("template sequence", template(#"{"Sequence": {"id": "C", "type_id": 0}}"#), "Sequence.id"),
            ("template sequence", template(#"{"Sequence": {"id": 1, "type_id": 0}}"#), "Sequence.id"),
            ("template sequence", template(#"{"Sequence": {"id": "A", "type_id": -1}}"#), "Sequence.type_id"),
            ("regex class range", split(#"[\\p{L}-\\p{N}]+"#), "class escape cannot start a range"),
            ("regex class range", split(#"[a-\\d]"#), "class escape cannot end a range"),
            ("regex class range", split(#"[\\s-z]"#), "class escape cannot start a range"),
            ("regex count", split("a{1000000000}"), "repeat count above 100000"),
            ("regex count", split("a{2,999999999999999999999}"), "repeat count above 100000"),
            ("regex count", split("a{,100001}"), "repeat count above 100000"),
        ]
    }()

    @Test(arguments: optionCases.indices)
    func optionRejected(_ i: Int) {
        let (label, json, problem) = Self.optionCases[i]
        do {
            _ = try Tokenizer(data: Data(json.utf8), source: "tok.json")
            Issue.record("\(label): accepted \(json)")
        } catch let e as TokenizerError {
            #expect(e.file == "tok.json" && e.description.contains(problem), "\(label): \(e)")
        } catch {
            Issue.record("\(label): unexpected \(error)")
        }
    }

    /// What HF accepts beside those: valid truncation/padding settings, a dropout of 0, and onig's `{,n}` (= `{0,n}`).
    @Test func acceptedNeighbours() throws {
        let m = #""model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [], "dropout": 0}"#
        for extra in [#""truncation": {"max_length": 512, "stride": 0, "strategy": "LongestFirst", "direction": "Right"}"#,
                      #""padding": {"strategy": {"Fixed": 8}, "direction": "Left", "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "a"}"#,
                      #""padding": {"strategy": "BatchLongest"}"#, #""truncation": null, "padding": null"#,
                      // Fields HF does not know are ignored there (no deny_unknown_fields), so here too.
                      #""truncation": {"max_length": 8, "future_option": 1}, "padding": {"strategy": "BatchLongest", "future": true}"#] {
            _ = try Tokenizer(data: Data("{\(m), \(extra)}".utf8), source: "tok.json")
        }
        // Truncation is not applied (transformers switches it off per call): a long text keeps every token.
        let t = try Tokenizer(data: Data(#"{\#(m), "truncation": {"max_length": 2, "stride": 0, "strategy": "LongestFirst", "direction": "Right"}}"#.utf8), source: "tok.json")
        #expect(try t.encode("ababab").count == 6)
    }

    @Test func minimalTokenizerWorks() throws {
        let t = try Tokenizer(data: Data(Self.base.utf8), source: "tok.json")
        #expect(try t.encode("ab") == [2])
        #expect(try t.encode("aab") == [0, 2])
        #expect(try t.decode([0, 2]) == "a ab")  // no decoder: HF joins tokens with spaces
    }
}

@Suite struct RegexEngineTests {
    func find(_ pattern: String, _ text: String) throws -> [String] {
        let re = try PatternRegex(pattern)
        let scalars = Array(text.unicodeScalars)
        return try re.matches(in: PatternRegex.Text(scalars.map(\.value))).map { String(String.UnicodeScalarView(scalars[$0])) }
    }

    /// onig (Ruby syntax, as tokenizers compiles patterns) reads `{,n}` as `{0,n}`; `{,}` and `{x}` stay literal.
    @Test func lowerBoundAbbreviation() throws {
        #expect(try find("a{,2}b", "aaab ab b") == ["aab", "ab", "b"])
        #expect(try find("a{,}", "a{,}") == ["a{,}"])
        #expect(try find("x{y}", "x{y}") == ["x{y}"])
        #expect(try find("[\\w-]+", "a-b c") == ["a-b", "c"])
    }

    @Test func gpt2Pattern() throws {
        let p = ByteLevelPreTokenizer.gpt2Pattern
        #expect(try find(p, "Hello world's  end") == ["Hello", " world", "'s", " ", " end"])
        // \s+(?!\S) leaves the last space to the next word.
        #expect(try find(p, "a   b") == ["a", "  ", " b"])
        #expect(try find(p, "x\n\n y") == ["x", "\n\n", " y"])
    }

    @Test func caseInsensitiveGroupAndCounts() throws {
        #expect(try find(#"(?i:'s|'t)|\p{N}{1,3}"#, "IT'S 12345 'T") == ["'S", "123", "45", "'T"])
        #expect(try find(#"a{2}|b{2,}|c{1,2}?"#, "aaa bbbb cc") == ["aa", "bbbb", "c", "c"])
    }

    @Test func classesAndLookahead() throws {
        #expect(try find(#"[^\r\n\p{L}\p{N}]?\p{Lu}+"#, "ab-CD EF") == ["-CD", " EF"])
        #expect(try find(#"\w+(?=!)"#, "hey! you") == ["hey"])
        #expect(try find(#"[a-c]+|[\d.]+"#, "abcd 3.14") == ["abc", "3.14"])
        #expect(try find(#"^\s+|\s+$"#, "  mid  ") == ["  ", "  "])
    }

    @Test func lazyQuantifierBacktracks() throws {
        #expect(try find(#"<.+?>"#, "<a><bb>") == ["<a>", "<bb>"])
        #expect(try find(#"x.*?y"#, "x1y2y") == ["x1y"])
    }

    /// Issue 14's runaway patterns: nested repetitions of what can match nothing end (as in onig: `a**` is
    /// `a*`), catastrophic backtracking stops at onig's retry limit with an error, huge expansions are refused.
    @Test func runawayPatternsAreBounded() throws {
        #expect(try find("a**", "aab aa") == find("a*", "aab aa"))
        #expect(try find("(a?)*b", "aab b") == ["aab", "b"])
        #expect(try find("(?:a|)+", "aa") == ["aa", ""])
        #expect(try find("(a*)*x", "aaax ax") == ["aaax", "ax"])
        let start = Date()
        for (pattern, text) in [("(a+)+$", String(repeating: "a", count: 40) + "!"), ("(x+x+)+y", String(repeating: "x", count: 40))] {
            #expect(throws: RegexError.self) { _ = try find(pattern, text) }
        }
        #expect(Date().timeIntervalSince(start) < 60)
        #expect(throws: RegexError.self) { _ = try PatternRegex("(ab){100000}{100000}") }
        #expect(throws: RegexError.self) { _ = try PatternRegex("(?:ab|cd){100001}") }
    }

    @Test func tokenizerWithRunawayPatternFailsNamingTheFile() throws {
        let json = #"{"model": {"type": "BPE", "vocab": {"a": 0, "!": 1}, "merges": []}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated"}}"#
        let t = try Tokenizer(data: Data(json.utf8), source: "tok.json")
        #expect(try t.encode("aa!") == [0, 0, 1])
        do {
            _ = try t.encode(String(repeating: "a", count: 40) + "!")
            Issue.record("catastrophic backtracking was not stopped")
        } catch let e as TokenizerError {
            #expect(e.file == "tok.json" && e.problem.contains("backtracked"), "\(e)")
        }
    }
}
