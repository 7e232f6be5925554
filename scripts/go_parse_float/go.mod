module goparsefloat
go 1.22
