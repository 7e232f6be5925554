// Writes every code point that Go's unicode.ToUpper or unicode.ToLower changes: "rune upper lower" in hex, one per
// line. Its output is rust/core/tests/data/go_case_mappings.txt, which pins OTTL's ToUpperCase/ToLowerCase to Go's
// mappings (the collector is built with Go):
//   cd scripts/go_case_mappings && go run . > ../../rust/core/tests/data/go_case_mappings.txt  (then add the header line)

package main

import (
	"fmt"
	"unicode"
)

func main() {
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if r >= 0xD800 && r <= 0xDFFF {
			continue
		}
		u := unicode.ToUpper(r)
		l := unicode.ToLower(r)
		if u != r || l != r {
			fmt.Printf("%x %x %x\n", r, u, l)
		}
	}
}
