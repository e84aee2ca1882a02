/// Unicode general categories as bits, so a character class is a bit mask test. Categories are
/// looked up once per scalar of the input (ASCII from a table).
public enum UnicodeCategory {
    // One bit per general category.
    public static let Lu: UInt32 = 1 << 0, Ll: UInt32 = 1 << 1, Lt: UInt32 = 1 << 2, Lm: UInt32 = 1 << 3, Lo: UInt32 = 1 << 4
    public static let Mn: UInt32 = 1 << 5, Mc: UInt32 = 1 << 6, Me: UInt32 = 1 << 7
    public static let Nd: UInt32 = 1 << 8, Nl: UInt32 = 1 << 9, No: UInt32 = 1 << 10
    public static let Pc: UInt32 = 1 << 11, Pd: UInt32 = 1 << 12, Ps: UInt32 = 1 << 13, Pe: UInt32 = 1 << 14
    public static let Pi: UInt32 = 1 << 15, Pf: UInt32 = 1 << 16, Po: UInt32 = 1 << 17
    public static let Sm: UInt32 = 1 << 18, Sc: UInt32 = 1 << 19, Sk: UInt32 = 1 << 20, So: UInt32 = 1 << 21
    public static let Zs: UInt32 = 1 << 22, Zl: UInt32 = 1 << 23, Zp: UInt32 = 1 << 24
    public static let Cc: UInt32 = 1 << 25, Cf: UInt32 = 1 << 26, Cs: UInt32 = 1 << 27, Co: UInt32 = 1 << 28, Cn: UInt32 = 1 << 29
    /// Not a category: the Unicode White_Space property, which `\s` matches.
    public static let whiteSpace: UInt32 = 1 << 30

    public static let L = Lu | Ll | Lt | Lm | Lo
    public static let M = Mn | Mc | Me
    public static let N = Nd | Nl | No
    public static let P = Pc | Pd | Ps | Pe | Pi | Pf | Po
    public static let S = Sm | Sc | Sk | So
    public static let Z = Zs | Zl | Zp
    public static let C = Cc | Cf | Cs | Co | Cn

    /// Names accepted in \p{…}: one- and two-letter codes and the long names.
    public static let byName: [String: UInt32] = [
        "L": L, "Letter": L, "Lu": Lu, "Uppercase_Letter": Lu, "Ll": Ll, "Lowercase_Letter": Ll, "Lt": Lt, "Titlecase_Letter": Lt,
        "Lm": Lm, "Modifier_Letter": Lm, "Lo": Lo, "Other_Letter": Lo, "LC": Lu | Ll | Lt, "Cased_Letter": Lu | Ll | Lt,
        "M": M, "Mark": M, "Combining_Mark": M, "Mn": Mn, "Nonspacing_Mark": Mn, "Mc": Mc, "Spacing_Mark": Mc, "Me": Me, "Enclosing_Mark": Me,
        "N": N, "Number": N, "Nd": Nd, "Decimal_Number": Nd, "Digit": Nd, "Nl": Nl, "Letter_Number": Nl, "No": No, "Other_Number": No,
        "P": P, "Punctuation": P, "Pc": Pc, "Connector_Punctuation": Pc, "Pd": Pd, "Dash_Punctuation": Pd, "Ps": Ps, "Open_Punctuation": Ps,
        "Pe": Pe, "Close_Punctuation": Pe, "Pi": Pi, "Initial_Punctuation": Pi, "Pf": Pf, "Final_Punctuation": Pf, "Po": Po, "Other_Punctuation": Po,
        "S": S, "Symbol": S, "Sm": Sm, "Math_Symbol": Sm, "Sc": Sc, "Currency_Symbol": Sc, "Sk": Sk, "Modifier_Symbol": Sk, "So": So, "Other_Symbol": So,
        "Z": Z, "Separator": Z, "Zs": Zs, "Space_Separator": Zs, "Zl": Zl, "Line_Separator": Zl, "Zp": Zp, "Paragraph_Separator": Zp,
        "C": C, "Other": C, "Cc": Cc, "Control": Cc, "Cf": Cf, "Format": Cf, "Cs": Cs, "Surrogate": Cs, "Co": Co, "Private_Use": Co,
        "Cn": Cn, "Unassigned": Cn, "White_Space": whiteSpace, "Whitespace": whiteSpace,
    ]

    private static let ascii: [UInt32] = (0..<128).map { compute(UInt32($0)) }

    /// The category bit of a scalar, with the white-space bit added for White_Space characters.
    @inline(__always) public static func of(_ v: UInt32) -> UInt32 {
        v < 128 ? ascii[Int(v)] : compute(v)
    }

    static func compute(_ v: UInt32) -> UInt32 {
        guard let s = Unicode.Scalar(v) else { return Cs }
        var bit: UInt32
        switch s.properties.generalCategory {
        case .uppercaseLetter: bit = Lu
        case .lowercaseLetter: bit = Ll
        case .titlecaseLetter: bit = Lt
        case .modifierLetter: bit = Lm
        case .otherLetter: bit = Lo
        case .nonspacingMark: bit = Mn
        case .spacingMark: bit = Mc
        case .enclosingMark: bit = Me
        case .decimalNumber: bit = Nd
        case .letterNumber: bit = Nl
        case .otherNumber: bit = No
        case .connectorPunctuation: bit = Pc
        case .dashPunctuation: bit = Pd
        case .openPunctuation: bit = Ps
        case .closePunctuation: bit = Pe
        case .initialPunctuation: bit = Pi
        case .finalPunctuation: bit = Pf
        case .otherPunctuation: bit = Po
        case .mathSymbol: bit = Sm
        case .currencySymbol: bit = Sc
        case .modifierSymbol: bit = Sk
        case .otherSymbol: bit = So
        case .spaceSeparator: bit = Zs
        case .lineSeparator: bit = Zl
        case .paragraphSeparator: bit = Zp
        case .control: bit = Cc
        case .format: bit = Cf
        case .surrogate: bit = Cs
        case .privateUse: bit = Co
        case .unassigned: bit = Cn
        @unknown default: bit = Cn
        }
        if s.properties.isWhitespace { bit |= whiteSpace }
        return bit
    }
}
