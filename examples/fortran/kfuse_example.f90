! kfuse from Fortran through ISO_C_BINDING and the C API (include/kfuse/kfuse.h).
!
! Builds the convt_gap_bias_lse pipeline at a small size from a JSON spec,
! runs it with the planner's choice (the fold) and with the reference
! strategy, and compares the two.
!
! kfuse arrays are row-major (C order): a C array x[N][C][H][W] is the
! Fortran array x(W, H, C, N), with the same memory. kfuse_plan_*_shape
! report extents in C order.
module kfuse_c
  use, intrinsic :: iso_c_binding
  implicit none

  integer(c_int), parameter :: KFUSE_OK = 0
  integer(c_int), parameter :: KFUSE_FLOAT32 = 0
  integer(c_int), parameter :: KFUSE_MAX_RANK = 8

  interface
    integer(c_int) function kfuse_init() bind(C, name="kfuse_init")
      import :: c_int
    end function

    integer(c_int) function kfuse_finalize() bind(C, name="kfuse_finalize")
      import :: c_int
    end function

    integer(c_int) function kfuse_plan_create(json_spec, strategy, on_device, plan) &
        bind(C, name="kfuse_plan_create")
      import :: c_int, c_char, c_ptr
      character(kind=c_char), dimension(*), intent(in) :: json_spec, strategy
      integer(c_int), value :: on_device
      type(c_ptr), intent(out) :: plan
    end function

    integer(c_int) function kfuse_plan_destroy(plan) bind(C, name="kfuse_plan_destroy")
      import :: c_int, c_ptr
      type(c_ptr), value :: plan
    end function

    integer(c_int) function kfuse_plan_input_shape(plan, dims, max_rank, rank) bind(C, name="kfuse_plan_input_shape")
      import :: c_int, c_int64_t, c_ptr
      type(c_ptr), value :: plan
      integer(c_int64_t), dimension(*), intent(out) :: dims
      integer(c_int), value :: max_rank
      integer(c_int), intent(out) :: rank
    end function

    integer(c_int) function kfuse_plan_output_shape(plan, dims, max_rank, rank) bind(C, name="kfuse_plan_output_shape")
      import :: c_int, c_int64_t, c_ptr
      type(c_ptr), value :: plan
      integer(c_int64_t), dimension(*), intent(out) :: dims
      integer(c_int), value :: max_rank
      integer(c_int), intent(out) :: rank
    end function

    integer(c_int) function kfuse_plan_dtype(plan, dtype) bind(C, name="kfuse_plan_dtype")
      import :: c_int, c_ptr
      type(c_ptr), value :: plan
      integer(c_int), intent(out) :: dtype
    end function

    integer(c_int) function kfuse_plan_run(plan, x, x_bytes, out, out_bytes) bind(C, name="kfuse_plan_run")
      import :: c_int, c_ptr, c_float, c_size_t
      type(c_ptr), value :: plan
      real(c_float), dimension(*), intent(in) :: x
      integer(c_size_t), value :: x_bytes
      real(c_float), dimension(*), intent(out) :: out
      integer(c_size_t), value :: out_bytes
    end function

    type(c_ptr) function kfuse_plan_describe(plan) bind(C, name="kfuse_plan_describe")
      import :: c_ptr
      type(c_ptr), value :: plan
    end function

    type(c_ptr) function kfuse_last_error() bind(C, name="kfuse_last_error")
      import :: c_ptr
    end function

    integer(c_size_t) function c_strlen(s) bind(C, name="strlen")
      import :: c_size_t, c_ptr
      type(c_ptr), value :: s
    end function
  end interface

contains

  ! A C string (char*) as a Fortran string.
  function c_string(p) result(s)
    type(c_ptr), intent(in) :: p
    character(len=:), allocatable :: s
    character(kind=c_char), dimension(:), pointer :: chars
    integer :: i, n
    if (.not. c_associated(p)) then
      s = ""
      return
    end if
    n = int(c_strlen(p))
    call c_f_pointer(p, chars, [n])
    allocate(character(len=n) :: s)
    do i = 1, n
      s(i:i) = chars(i)
    end do
  end function

  subroutine check(status, what)
    integer(c_int), intent(in) :: status
    character(len=*), intent(in) :: what
    if (status /= KFUSE_OK) then
      print '(a, a, i0, a, a)', what, ": status ", status, ": ", c_string(kfuse_last_error())
      error stop 1
    end if
  end subroutine

end module kfuse_c

program kfuse_example
  use kfuse_c
  implicit none

  character(len=*), parameter :: nl = c_null_char
  character(len=:), allocatable :: spec
  type(c_ptr) :: plan, ref
  integer(c_int64_t) :: dims(KFUSE_MAX_RANK), odims(KFUSE_MAX_RANK)
  integer(c_int) :: rank, orank, dtype
  real(c_float), allocatable :: x(:, :, :, :), out(:), out_ref(:)
  integer(c_size_t) :: x_bytes, out_bytes
  integer :: n, c, h, w
  real(8) :: num, den, rel

  spec = '{"name": "convt_gap_bias_lse (fortran)",' // &
         ' "input": {"shape": [2, 8, 17, 17], "init": {"kind": "uniform", "seed": 0}},' // &
         ' "ops": [' // &
         '  {"op": "conv_transpose2d",' // &
         '   "weight": {"shape": [8, 16, 3, 3], "init": {"kind": "conv_default", "seed": 1}},' // &
         '   "bias": {"shape": [16], "init": {"kind": "conv_default", "seed": 2}}},' // &
         '  {"op": "mean", "axes": [2, 3], "keepdim": true},' // &
         '  {"op": "add", "tensor": {"shape": [16, 1, 1], "init": {"kind": "randn", "seed": 3}}},' // &
         '  {"op": "logsumexp", "axes": [1], "keepdim": true},' // &
         '  {"op": "sum", "axes": [2, 3]},' // &
         '  {"op": "mul", "scalar": 10.0}]}'

  call check(kfuse_init(), "kfuse_init")
  call check(kfuse_plan_create(spec // nl, "auto" // nl, 0_c_int, plan), "kfuse_plan_create")
  call check(kfuse_plan_create(spec // nl, "reference" // nl, 0_c_int, ref), "kfuse_plan_create (reference)")
  print '(a)', c_string(kfuse_plan_describe(plan))

  call check(kfuse_plan_input_shape(plan, dims, KFUSE_MAX_RANK, rank), "kfuse_plan_input_shape")
  call check(kfuse_plan_output_shape(plan, odims, KFUSE_MAX_RANK, orank), "kfuse_plan_output_shape")
  call check(kfuse_plan_dtype(plan, dtype), "kfuse_plan_dtype")
  if (rank /= 4 .or. orank /= 2 .or. dtype /= KFUSE_FLOAT32) then
    print '(a)', "unexpected rank or dtype"
    error stop 1
  end if

  ! C order [N, C, H, W] is Fortran (W, H, C, N).
  allocate(x(dims(4), dims(3), dims(2), dims(1)))
  do n = 1, int(dims(1))
    do c = 1, int(dims(2))
      do h = 1, int(dims(3))
        do w = 1, int(dims(4))
          x(w, h, c, n) = real(mod(w * 7 + h * 13 + c * 31 + n * 17, 97), c_float) / 97.0
        end do
      end do
    end do
  end do
  allocate(out(product(odims(1:orank))), out_ref(product(odims(1:orank))))

  ! Buffer sizes in bytes: kfuse refuses a buffer too small for the plan.
  x_bytes = c_sizeof(x(1, 1, 1, 1)) * size(x, kind=c_size_t)
  out_bytes = c_sizeof(out(1)) * size(out, kind=c_size_t)
  call check(kfuse_plan_run(plan, x, x_bytes, out, out_bytes), "kfuse_plan_run")
  call check(kfuse_plan_run(ref, x, x_bytes, out_ref, out_bytes), "kfuse_plan_run (reference)")

  num = sum((real(out, 8) - real(out_ref, 8))**2)
  den = sum(real(out_ref, 8)**2)
  rel = sqrt(num / den)
  print '(a, 2f14.7)', "output:    ", out
  print '(a, 2f14.7)', "reference: ", out_ref
  print '(a, es10.3)', "relative error: ", rel

  call check(kfuse_plan_destroy(plan), "kfuse_plan_destroy")
  call check(kfuse_plan_destroy(ref), "kfuse_plan_destroy")
  call check(kfuse_finalize(), "kfuse_finalize")
  ! The main program's allocatables are not freed at its end: free them, so
  ! that LeakSanitizer (the sanitizer build in .ci/run) sees no leak.
  deallocate(x, out, out_ref, spec)
  if (.not. (rel < 1.0d-5)) then
    print '(a)', "FAIL: the plan and the reference differ"
    error stop 1
  end if
  print '(a)', "PASS"
end program kfuse_example
