#!/bin/sh
# ftemu's runner for one case of the kernel's ftrace selftests, run the way ftracetest's
# run_test/__run_test runs it: the kernel's test.d/functions, the "# requires:" check,
# initialize_ftrace, then the case sourced with set -e in a subshell inside the tracing
# directory; exit_* helpers signal the result to this shell as ftracetest's do.
# Usage: ftracetest_case.sh SELFTEST_DIR TRACING_DIR CASE.tc [instance]
# Prints "RESULT <PASS|FAIL|UNRESOLVED|UNTESTED|UNSUPPORTED|XFAIL>" last.

KTEST_DIR=$1
TRACING_DIR=$2
CASE=$3

PASS=0 FAIL=1 UNRESOLVED=2 UNTESTED=3 UNSUPPORTED=4 XFAIL=5
SIG_BASE=36
SIG_PID=$$
SIG_RESULT=0

exit_pass () { exit 0; }
exit_fail () { exit 1; }
exit_unresolved () { kill -s $((SIG_BASE + UNRESOLVED)) $SIG_PID; exit 0; }
exit_untested () { kill -s $((SIG_BASE + UNTESTED)) $SIG_PID; exit 0; }
exit_unsupported () { kill -s $((SIG_BASE + UNSUPPORTED)) $SIG_PID; exit 0; }
exit_xfail () { kill -s $((SIG_BASE + XFAIL)) $SIG_PID; exit 0; }
trap 'SIG_RESULT=$UNRESOLVED' $((SIG_BASE + UNRESOLVED))
trap 'SIG_RESULT=$UNTESTED' $((SIG_BASE + UNTESTED))
trap 'SIG_RESULT=$UNSUPPORTED' $((SIG_BASE + UNSUPPORTED))
trap 'SIG_RESULT=$XFAIL' $((SIG_BASE + XFAIL))

checkreq() { # testfile
  requires=`grep "^#[ \t]*requires:" $1 | cut -f2- -d:`   # eval keeps quoted patterns whole
  eval check_requires "$requires"
}

. "$KTEST_DIR/test.d/functions"

if [ "$4" = instance ]; then
  TRACING_DIR=`mktemp -d $TRACING_DIR/instances/ftracetest.XXXXXX`
fi
export TMPDIR=`mktemp -d /tmp/ftracetest-dir.XXXXXX`
(cd $TRACING_DIR; read PID _ < /proc/self/stat; set -e; set -x;
 checkreq $CASE; initialize_ftrace; . $CASE)
[ $? -ne 0 ] && SIG_RESULT=$FAIL
rm -rf $TMPDIR
if [ "$4" = instance ]; then
  rmdir $TRACING_DIR
fi
(cd ${TRACING_DIR%/instances/*}; initialize_ftrace) >/dev/null 2>&1
case $SIG_RESULT in
  0) echo "RESULT PASS" ;; 1) echo "RESULT FAIL" ;; 2) echo "RESULT UNRESOLVED" ;;
  3) echo "RESULT UNTESTED" ;; 4) echo "RESULT UNSUPPORTED" ;; 5) echo "RESULT XFAIL" ;;
esac
