// Names that look alike. The server refuses invisible and formatting
// characters and stores names in NFC (docs/protocol.md, name rules), but
// different letters may still look the same: a Cyrillic "А" and a Latin
// "A", "l" and "I", "rn" and "m". skeleton maps a name to a form in which
// such names are equal, after the idea of Unicode TR39's confusable
// skeleton, with the look-alikes of the Latin, Greek and Cyrillic letters
// and digits people use in names. The page shows a short suffix on names
// whose skeletons match another's.

// One character that looks like another, or like a pair.
const confusable = new Map(Object.entries({
  // Cyrillic lower case
  "а": "a", "в": "b", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i", "ј": "j", "к": "k", "ӏ": "l",
  "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "ԁ": "d",
  "ԛ": "q", "ԝ": "w", "ь": "b", "г": "r", "п": "n", "и": "u", "ү": "y", "ԍ": "g",
  // Cyrillic upper case
  "А": "A", "В": "B", "Е": "E", "Ё": "E", "З": "3", "І": "l", "Ї": "l", "Ј": "J", "К": "K", "М": "M",
  "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "Ү": "Y", "Ӏ": "l",
  "Ԁ": "D", "Ԛ": "Q", "Ԝ": "W", "Ь": "b",
  // Greek
  "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "l", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
  "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "α": "a", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
  "τ": "t", "υ": "u", "χ": "x", "ω": "w",
  // Armenian and others often used to imitate Latin letters
  "օ": "o", "ս": "u", "ց": "g", "ո": "n", "հ": "h", "Տ": "S", "Օ": "O",
  // Latin and digits that look alike
  "I": "l", "1": "l", "|": "l", "ı": "i", "0": "O", "ℓ": "l", "ǀ": "l", "ɑ": "a", "ɡ": "g", "ʏ": "y",
}));

// Pairs of letters that look like one.
const pairs = [["rn", "m"], ["vv", "w"], ["cl", "d"], ["nn", "m"]];

// skeleton is name's look-alike form: compatibility-decomposed (so that
// full-width and mathematical letters are plain ones), without combining
// marks, every confusable letter mapped, white space removed.
export function skeleton(name) {
  let s = "";
  for (const ch of name.normalize("NFKD").replace(/\p{M}/gu, "")) {
    if (/\s/u.test(ch)) continue;
    s += confusable.get(ch) ?? ch;
  }
  for (const [from, to] of pairs) s = s.split(from).join(to);
  return s;
}
