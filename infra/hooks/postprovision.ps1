# azd postprovision hook on Windows (azure.yaml): runs the same registration as on Linux and macOS,
# infra/hooks/postprovision.sh, which calls infra/register-app.sh. Both need bash: Git for Windows
# (Git Bash) provides it; WSL works if az and azd are installed inside WSL.
$ErrorActionPreference = 'Stop'

$bash = Get-Command bash -ErrorAction SilentlyContinue
if (-not $bash) {
    Write-Error ("postprovision: registering the Entra ID app needs bash (install Git for Windows, or run azd " +
        "from WSL or Azure Cloud Shell), then run azd provision again. Without azd: docs/deploy.md, manual path.")
    exit 1
}

& $bash.Source (Join-Path $PSScriptRoot 'postprovision.sh')
exit $LASTEXITCODE
