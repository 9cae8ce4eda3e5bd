# --- Hand-written (completions/src/stackctl.fish) ---------------------------
# Service names and task ids from the running daemon, through the hidden
# `stackctl __complete services|tasks` (a word, a tab, a description, one a
# line; nothing when the daemon does not answer).

function __fish_stackctl_ask
    set -l globals
    contains -- --user (commandline -opc); and set globals --user
    command stackctl $globals __complete $argv[1] 2>/dev/null
end

complete -c stackctl -n "__fish_stackctl_using_subcommand status start stop restart update pull down logs" -f -a "(__fish_stackctl_ask services)"
complete -c stackctl -n "__fish_stackctl_using_subcommand task cancel" -f -a "(__fish_stackctl_ask tasks)"
complete -c stackctl -n "__fish_stackctl_using_subcommand tasks" -l service -x -a "(__fish_stackctl_ask services)"
