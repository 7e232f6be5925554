module gocasemappings
go 1.22
