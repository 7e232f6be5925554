module gocase
go 1.22
