package warm

import (
	_ "github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	_ "github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	_ "github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	_ "github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	_ "github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	_ "github.com/microsoft/kiota-abstractions-go"
	_ "github.com/microsoft/kiota-authentication-azure-go"
	_ "github.com/microsoft/kiota-http-go"
	_ "github.com/microsoftgraph/msgraph-sdk-go"
	_ "github.com/microsoftgraph/msgraph-sdk-go-core"
	_ "github.com/pquerna/otp"
)
