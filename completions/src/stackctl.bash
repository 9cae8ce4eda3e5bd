# --- Hand-written (completions/src/stackctl.bash) ---------------------------
# Service names and task ids come from the running daemon, through the
# hidden `stackctl __complete services|tasks` (a word, a tab, a description,
# one a line; nothing when the daemon does not answer). Everything else is
# left to _stackctl above.

_stackctl_ask() {
    # $1: services or tasks; the rest: global options to pass on (--user).
    local what=$1 line
    shift
    while IFS= read -r line; do
        printf '%s\n' "${line%%$'\t'*}"
    done < <(command stackctl "$@" __complete "$what" 2>/dev/null)
}

_stackctl_dynamic() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    local i word sub="" what=""
    local -a globals=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        case $word in
            --user) globals+=(--user) ;;
            -o | --output | -n | --lines | --state | --service | --host) i=$((i + 1)) ;;
            -*) ;;
            *) [[ -z $sub ]] && sub=$word ;;
        esac
    done
    case $prev in
        --service) [[ $sub == tasks ]] && what=services ;;
        -o | --output | -n | --lines | --state | --host) ;;
        *)
            if [[ $cur != -* ]]; then
                case $sub in
                    status | start | stop | restart | update | pull | down | logs) what=services ;;
                    task | cancel) what=tasks ;;
                esac
            fi
            ;;
    esac
    if [[ -n $what ]]; then
        local IFS=$'\n'
        # shellcheck disable=SC2207 # one candidate a line, IFS is a newline
        COMPREPLY=($(compgen -W "$(_stackctl_ask "$what" "${globals[@]}")" -- "$cur"))
        return 0
    fi
    _stackctl "$@"
}

complete -F _stackctl_dynamic -o bashdefault -o default stackctl
