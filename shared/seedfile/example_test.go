package seedfile_test

import (
	"errors"
	"fmt"
	"strings"

	"github.com/oathpipe/oathpipe/shared/seedfile"
)

func ExampleRead() {
	file := "\uFEFFupn,serial number,secret key,timeinterval,manufacturer,model\r\n" +
		"ada.lovelace@contoso.example,8659612000101,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,30,Token2,C202\r\n" +
		"Helga@contoso.com,1234567,1234567890abcdef1234567890abcdef,60,Contoso,HardwareKey\r\n" +
		",8659612000102,JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP,45,Token2,C202\r\n"
	sum, err := seedfile.Read(strings.NewReader(file), seedfile.Options{},
		func(r seedfile.Record) error {
			fmt.Println("token", r.Line, r.Token.Serial, r.UserPrincipalName, r.Seed) // a Seed prints no secret
			return nil
		},
		func(p seedfile.Problem) { fmt.Println("problem", p.Line, p.Field, p.Code) })
	var fe *seedfile.FileError
	fmt.Printf("%s: %d rows, %d valid, file unusable: %v\n", sum.Format, sum.Rows, sum.Valid, errors.As(err, &fe))
	// Output:
	// token 2 8659612000101 ada.lovelace@contoso.example seed{6ed645ef0e1abea1 hmacsha1 6 digits 30s}
	// problem 3 secret key secret.not-base32
	// problem 4 time interval interval.unsupported
	// entra-csv: 3 rows, 1 valid, file unusable: false
}
