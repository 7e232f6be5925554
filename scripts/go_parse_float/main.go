// Writes Go's strconv.ParseFloat(s, 64) of each input line: "input<TAB>float64 bits in hex | err | nan".
// Its output is rust/core/tests/data/go_parse_float.tsv, which pins OTTL's Double of a string to Go's parser
// (the collector is built with Go). Regenerate from the inputs already there:
//   cd scripts/go_parse_float && grep -v "^#" ../../rust/core/tests/data/go_parse_float.tsv | cut -f1 | go run . > /tmp/t &&
//   (echo "# scripts/go_parse_float, $(go version | cut -d" " -f3): input, bits or err"; cat /tmp/t) > ../../rust/core/tests/data/go_parse_float.tsv

package main

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"strconv"
)

func main() {
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		s := sc.Text()
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			fmt.Printf("%s\terr\n", s)
		} else if math.IsNaN(f) {
			fmt.Printf("%s\tnan\n", s)
		} else {
			fmt.Printf("%s\t%016x\n", s, math.Float64bits(f))
		}
	}
}
