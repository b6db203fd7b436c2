# Debian's Kokkos 3.4 (a Trilinos build) exports Kokkos::kokkos with an include
# directory that is wrong (/usr/include, or one that does not exist once Kokkos
# Kernels is found too); its headers live in Kokkos_INCLUDE_DIRS.
function(kfuse_fix_kokkos_target)
  if(Kokkos_VERSION VERSION_LESS 4 AND Kokkos_INCLUDE_DIRS)
    foreach(tgt Kokkos::kokkos Kokkos::kokkoscore)
      if(TARGET ${tgt})
        get_target_property(_aliased ${tgt} ALIASED_TARGET)
        if(_aliased)
          set(tgt ${_aliased})
        endif()
        set_target_properties(${tgt} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${Kokkos_INCLUDE_DIRS}")
      endif()
    endforeach()
  endif()
endfunction()

# The Kokkos Kernels target to link, in `var`: Kokkos::kokkoskernels (Kokkos
# Kernels 4), else what KokkosKernels_LIBRARIES names (Debian's Trilinos build:
# trilinos_kokkoskernels and the Kokkos libraries under it).
function(kfuse_kokkos_kernels_target var)
  if(TARGET Kokkos::kokkoskernels)
    set(${var} Kokkos::kokkoskernels PARENT_SCOPE)
  else()
    set(${var} ${KokkosKernels_LIBRARIES} PARENT_SCOPE)
  endif()
endfunction()
